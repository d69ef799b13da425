/*
 * metrics: Prometheus text exposition (format 0.0.4) of a `status` reply (see
 * metrics.h). Families are tables: one row per metric, naming the JSON field
 * it comes from, so that adding a field is one line. The reclaim ladder's
 * steps (the reply's "ladder") become one histogram of how long each step's
 * work took and one counter of the bytes it took back, labelled step="...".
 */
#include "metrics.h"

#include <errno.h>
#include <string.h>

typedef struct {
    const char *name;  /* family name without the mm_ prefix */
    const char *type;  /* "gauge" or "counter" */
    const char *field; /* key in the JSON object */
    const char *help;
} metric_t;

/* Totals, from the top level of the reply. */
static const metric_t totals[] = {
    {"capacity_bytes", "gauge", "capacity_bytes", "Bytes that clients may hold resident in all."},
    {"granted_bytes", "gauge", "granted_bytes", "Bytes granted to clients in all."},
    {"resident_bytes", "gauge", "resident_bytes", "Bytes resident in clients in all."},
    {"clients", "gauge", "client_count", "Clients registered with the daemon."},
};

/* Per NUMA node, from "nodes", labelled node="N". */
static const metric_t per_node[] = {
    {"node_capacity_bytes", "gauge", "capacity_bytes", "Capacity of the node's pool in bytes."},
    {"node_granted_bytes", "gauge", "granted_bytes", "Bytes granted from the node's pool."},
    {"node_resident_bytes", "gauge", "resident_bytes", "Bytes resident in the node's pool."},
};

/* Per client, from "clients", labelled client="name",id="N". Counters carry
 * the _total suffix that the exposition format expects of them. */
static const metric_t per_client[] = {
    {"client_target_bytes", "gauge", "target_bytes", "Bytes the policy lets the client hold."},
    {"client_granted_bytes", "gauge", "granted_bytes", "Bytes granted to the client."},
    {"client_owned_bytes", "gauge", "owned_bytes", "Bytes of granted chunks the client uses."},
    {"client_resident_bytes", "gauge", "resident_bytes", "Bytes of the client resident in RAM."},
    {"client_free_bytes", "gauge", "free_bytes", "Bytes granted to the client but free."},
    {"client_discardable_bytes", "gauge", "discardable_bytes",
     "Bytes the client marked discardable."},
    {"client_paged_bytes", "gauge", "paged_bytes",
     "Bytes of the client paged out by the host now."},
    {"client_paged_out_bytes_total", "counter", "paged_out_bytes",
     "Bytes of the client paged out by the host ever."},
    {"client_missed_deadlines_total", "counter", "missed_deadlines",
     "Reclaim requests the client did not answer in time."},
    {"client_reclaimed_bytes_total", "counter", "reclaimed_bytes",
     "Bytes reclaimed from the client."},
    {"client_revoked_bytes_total", "counter", "revoked_bytes",
     "Bytes revoked from the client without its consent."},
    {"client_touched_reclaimed_chunks_total", "counter", "touched_reclaimed",
     "Reclaimed chunks found touched by the client afterwards."},
    {"client_frozen", "gauge", "frozen", "1 while the client is frozen, else 0."},
    {"client_early_thaws_total", "counter", "early_thaws",
     "Freezes of the client that ended early."},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

int mm__metrics_write_label(FILE *out, const char *s)
{
    int rc = 0;
    for (; *s && rc >= 0; s++) {
        if (*s == '\\')
            rc = fputs("\\\\", out);
        else if (*s == '"')
            rc = fputs("\\\"", out);
        else if (*s == '\n')
            rc = fputs("\\n", out);
        else
            rc = fputc((unsigned char)*s, out);
    }
    return rc;
}

static void header(FILE *out, const metric_t *m)
{
    /* Help texts are ours and hold no backslash or newline to escape. */
    fprintf(out, "# HELP mm_%s %s\n# TYPE mm_%s %s\n", m->name, m->help, m->name, m->type);
}

/* The value of key in o as an integer; booleans are 0/1. Returns 0 if the
 * field is there and numeric, -ENOENT if not. */
static int value(json_t *o, const char *key, long long *v)
{
    json_t *j = json_object_get(o, key);
    if (json_is_integer(j))
        *v = (long long)json_integer_value(j);
    else if (json_is_boolean(j))
        *v = json_is_true(j);
    else if (json_is_real(j))
        *v = (long long)json_real_value(j);
    else
        return -ENOENT;
    return 0;
}

/* A bucket bound in seconds as the exposition writes it: ns / 1e9 with no
 * trailing zeros ("0.0001", "2.5", "10"). */
static void write_seconds(FILE *out, long long ns)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld.%09lld", ns / 1000000000, ns % 1000000000);
    size_t n = strlen(buf);
    while (buf[n - 1] == '0')
        buf[--n] = '\0';
    if (buf[n - 1] == '.')
        buf[--n] = '\0';
    fputs(buf, out);
}

/* The ladder's families; steps the reply lacks (an older daemon) are left
 * out, as are malformed entries. */
static void write_ladder(FILE *out, json_t *ladder)
{
    size_t i, b;
    json_t *o, *bucket;
    fputs("# HELP mm_ladder_step_duration_seconds How long each run of a reclaim ladder step "
          "took.\n# TYPE mm_ladder_step_duration_seconds histogram\n",
          out);
    json_array_foreach(ladder, i, o)
    {
        const char *step = json_string_value(json_object_get(o, "step"));
        long long count, sum_ns, le, c;
        if (!step || value(o, "count", &count) < 0 || value(o, "sum_ns", &sum_ns) < 0)
            continue;
        json_array_foreach(json_object_get(o, "buckets"), b, bucket)
        {
            if (value(bucket, "le_ns", &le) < 0 || value(bucket, "count", &c) < 0)
                continue;
            fputs("mm_ladder_step_duration_seconds_bucket{step=\"", out);
            mm__metrics_write_label(out, step);
            fputs("\",le=\"", out);
            write_seconds(out, le);
            fprintf(out, "\"} %lld\n", c);
        }
        fputs("mm_ladder_step_duration_seconds_bucket{step=\"", out);
        mm__metrics_write_label(out, step);
        fprintf(out, "\",le=\"+Inf\"} %lld\n", count);
        fputs("mm_ladder_step_duration_seconds_sum{step=\"", out);
        mm__metrics_write_label(out, step);
        fprintf(out, "\"} %lld.%09lld\n", sum_ns / 1000000000, sum_ns % 1000000000);
        fputs("mm_ladder_step_duration_seconds_count{step=\"", out);
        mm__metrics_write_label(out, step);
        fprintf(out, "\"} %lld\n", count);
    }
    fputs("# HELP mm_ladder_reclaimed_bytes_total Bytes each reclaim ladder step took back.\n"
          "# TYPE mm_ladder_reclaimed_bytes_total counter\n",
          out);
    json_array_foreach(ladder, i, o)
    {
        const char *step = json_string_value(json_object_get(o, "step"));
        long long bytes;
        if (!step || value(o, "bytes", &bytes) < 0)
            continue;
        fputs("mm_ladder_reclaimed_bytes_total{step=\"", out);
        mm__metrics_write_label(out, step);
        fprintf(out, "\"} %lld\n", bytes);
    }
}

int mm__metrics_write(FILE *out, json_t *status)
{
    long long v;
    size_t i;
    json_t *o;
    if (!json_is_object(status))
        return -EINVAL;
    json_t *nodes = json_object_get(status, "nodes");
    json_t *clients = json_object_get(status, "clients");

    for (size_t m = 0; m < COUNT(totals); m++) {
        header(out, &totals[m]);
        if (value(status, totals[m].field, &v) == 0)
            fprintf(out, "mm_%s %lld\n", totals[m].name, v);
    }
    for (size_t m = 0; m < COUNT(per_node); m++) {
        header(out, &per_node[m]);
        json_array_foreach(nodes, i, o)
        {
            long long node;
            if (value(o, "node", &node) == 0 && value(o, per_node[m].field, &v) == 0)
                fprintf(out, "mm_%s{node=\"%lld\"} %lld\n", per_node[m].name, node, v);
        }
    }
    for (size_t m = 0; m < COUNT(per_client); m++) {
        header(out, &per_client[m]);
        json_array_foreach(clients, i, o)
        {
            long long id;
            const char *name = json_string_value(json_object_get(o, "name"));
            if (value(o, "id", &id) < 0 || value(o, per_client[m].field, &v) < 0)
                continue; /* an older daemon's reply: leave the sample out */
            fprintf(out, "mm_%s{client=\"", per_client[m].name);
            mm__metrics_write_label(out, name ? name : "");
            fprintf(out, "\",id=\"%lld\"} %lld\n", id, v);
        }
    }
    write_ladder(out, json_object_get(status, "ladder"));
    return ferror(out) ? -EIO : 0;
}
