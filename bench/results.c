/*
 * Benchmark results (see results.h). Rows are kept as jansson objects in one
 * array, in the order added; the meta block (git revision, arguments, uname,
 * CPU model, memory, huge pages) is gathered when the file is written, so
 * that it describes the machine the numbers came from.
 */
#include "results.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include <jansson.h>

#ifndef MM_SOURCE_DIR
#define MM_SOURCE_DIR ""
#endif

/* rows: array of row objects; args: array of strings; notes: array of
 * not-run notes. All owned. */
struct mm_results {
    json_t *rows;
    json_t *args;
    json_t *notes;
};

int mm__results_new(int argc, char *const argv[], mm_results_t **out)
{
    mm_results_t *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return -ENOMEM;
    r->rows = json_array();
    r->args = json_array();
    r->notes = json_array();
    if (r->rows == NULL || r->args == NULL || r->notes == NULL)
        goto fail;
    for (int i = 0; i < argc; i++)
        if (json_array_append_new(r->args, json_string(argv[i])) < 0)
            goto fail;
    *out = r;
    return 0;
fail:
    mm__results_free(r);
    return -ENOMEM;
}

void mm__results_free(mm_results_t *r)
{
    if (r == NULL)
        return;
    json_decref(r->rows);
    json_decref(r->args);
    json_decref(r->notes);
    free(r);
}

static json_t *row_new(const mm_result_row_t *row, double value)
{
    return json_pack("{s:s, s:s, s:s, s:f, s:s}", "scenario", row->scenario, "system", row->system,
                     "metric", row->metric, "value", value, "unit", row->unit);
}

static int add_row(mm_results_t *r, const mm_result_row_t *row, double value,
                   const mm_result_key_t *extra, size_t n_extra, json_t **added)
{
    json_t *obj;

    if (r == NULL || row == NULL || row->scenario == NULL || row->system == NULL ||
        row->metric == NULL || row->unit == NULL || (extra == NULL && n_extra > 0) ||
        !isfinite(value))
        return -EINVAL;
    obj = row_new(row, value);
    if (obj == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n_extra; i++) {
        if (json_object_set_new(obj, extra[i].key, json_integer(extra[i].value)) < 0) {
            json_decref(obj);
            return -ENOMEM;
        }
    }
    if (json_array_append_new(r->rows, obj) < 0)
        return -ENOMEM;
    *added = obj;
    return 0;
}

int mm__results_add(mm_results_t *r, const mm_result_row_t *row, double value,
                    const mm_result_key_t *extra, size_t n_extra)
{
    json_t *obj;

    return add_row(r, row, value, extra, n_extra, &obj);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

double mm__results_median(const double *samples, size_t n)
{
    double *sorted, m;

    if (n == 0)
        return 0;
    sorted = malloc(n * sizeof(*sorted));
    if (sorted == NULL)
        return NAN;
    memcpy(sorted, samples, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), cmp_double);
    m = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    free(sorted);
    return m;
}

int mm__results_add_median(mm_results_t *r, const mm_result_row_t *row, const double *samples,
                           size_t n, const mm_result_key_t *extra, size_t n_extra)
{
    double lo, hi;
    json_t *obj;
    int rc;

    if (samples == NULL || n == 0)
        return -EINVAL;
    lo = hi = samples[0];
    for (size_t i = 1; i < n; i++) {
        lo = fmin(lo, samples[i]);
        hi = fmax(hi, samples[i]);
    }
    rc = add_row(r, row, mm__results_median(samples, n), extra, n_extra, &obj);
    if (rc < 0)
        return rc;
    if (json_object_set_new(obj, "min", json_real(lo)) < 0 ||
        json_object_set_new(obj, "max", json_real(hi)) < 0 ||
        json_object_set_new(obj, "reps", json_integer((json_int_t)n)) < 0)
        return -ENOMEM;
    return 0;
}

int mm__results_not_run(mm_results_t *r, const char *scenario, const char *system,
                        const char *reason)
{
    if (r == NULL || scenario == NULL || system == NULL || reason == NULL)
        return -EINVAL;
    json_t *note =
        json_pack("{s:s, s:s, s:s}", "scenario", scenario, "system", system, "reason", reason);
    return note != NULL && json_array_append_new(r->notes, note) == 0 ? 0 : -ENOMEM;
}

const json_t *mm__results_rows(const mm_results_t *r)
{
    return r->rows;
}

const json_t *mm__results_notes(const mm_results_t *r)
{
    return r->notes;
}

/* ---- Meta ------------------------------------------------------------- */

/* Copy the first line of cmd's output into buf (trailing newline dropped). */
static bool first_line_of(const char *cmd, char *buf, size_t cap)
{
    FILE *p = popen(cmd, "r");
    bool ok;

    if (p == NULL)
        return false;
    ok = fgets(buf, (int)cap, p) != NULL;
    if (pclose(p) != 0)
        ok = false;
    if (ok)
        buf[strcspn(buf, "\n")] = '\0';
    return ok && buf[0] != '\0';
}

static json_t *meta_git_rev(void)
{
    char cmd[4200], rev[64];
    const char *dir = MM_SOURCE_DIR;

    /* The directory goes inside single quotes; one with a quote is skipped. */
    if (dir[0] == '\0' || strchr(dir, '\'') != NULL || strlen(dir) > 4000)
        return json_string("unknown");
    snprintf(cmd, sizeof(cmd), "git -C '%s' rev-parse --short HEAD 2>/dev/null", dir);
    if (!first_line_of(cmd, rev, sizeof(rev)))
        return json_string("unknown");
    return json_string(rev);
}

static json_t *meta_uname(void)
{
    struct utsname u;
    char buf[4 * sizeof(u.release) + 4];

    if (uname(&u) < 0)
        return json_string("unknown");
    snprintf(buf, sizeof(buf), "%s %s %s %s", u.sysname, u.release, u.version, u.machine);
    return json_string(buf);
}

/* The value after "key" and a colon on the first matching line of a
 * /proc-style file, with leading blanks skipped. */
static bool proc_field(const char *path, const char *key, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t klen = strlen(key);
    char line[512];
    bool found = false;

    if (f == NULL)
        return false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        char *colon = strchr(line, ':');

        if (strncmp(line, key, klen) != 0 || colon == NULL ||
            strspn(line + klen, " \t") != (size_t)(colon - line - (ptrdiff_t)klen))
            continue;
        colon += 1 + strspn(colon + 1, " \t");
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(out, cap, "%s", colon);
        found = true;
    }
    fclose(f);
    return found;
}

static json_t *meta_cpu(void)
{
    char cpu[256];

    if (!proc_field("/proc/cpuinfo", "model name", cpu, sizeof(cpu)))
        return json_string("unknown");
    return json_string(cpu);
}

static json_t *meta_mem_total(void)
{
    char kb[64];

    if (!proc_field("/proc/meminfo", "MemTotal", kb, sizeof(kb)))
        return json_integer(0);
    return json_integer((json_int_t)strtoll(kb, NULL, 10) * 1024);
}

/* Huge pages are usable when shmem THP is not off ([never], or [deny],
 * which forces it off) or when the hugetlb pool has pages. */
static json_t *meta_hugepages(void)
{
    char line[256], total[64];
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "r");
    bool on = false;

    if (f != NULL) {
        if (fgets(line, sizeof(line), f) != NULL)
            on = strstr(line, "[never]") == NULL && strstr(line, "[deny]") == NULL;
        fclose(f);
    }
    if (!on && proc_field("/proc/meminfo", "HugePages_Total", total, sizeof(total)))
        on = strtoll(total, NULL, 10) > 0;
    return json_boolean(on);
}

static json_t *meta_new(const mm_results_t *r)
{
    return json_pack("{s:o, s:O, s:o, s:o, s:o, s:o}", "git_rev", meta_git_rev(), "args", r->args,
                     "uname", meta_uname(), "cpu", meta_cpu(), "mem_total_bytes", meta_mem_total(),
                     "hugepages", meta_hugepages());
}

json_t *mm__results_meta(const mm_results_t *r)
{
    return meta_new(r);
}

int mm__results_write_json(const mm_results_t *r, const char *path)
{
    json_t *root = json_pack("{s:o, s:O}", "meta", meta_new(r), "results", r->rows);
    FILE *f;
    int rc = 0;

    if (root == NULL)
        return -ENOMEM;
    if (json_array_size(r->notes) > 0 && json_object_set(root, "not_run", r->notes) < 0) {
        json_decref(root);
        return -ENOMEM;
    }
    f = fopen(path, "w");
    if (f == NULL) {
        rc = -errno;
        goto out;
    }
    if (json_dumpf(root, f, JSON_INDENT(2)) < 0 || fputc('\n', f) == EOF)
        rc = -EIO;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
out:
    json_decref(root);
    return rc;
}

/* ---- Table ------------------------------------------------------------ */

/* Integral values print without decimals (byte counts), others with three. */
static void format_number(double v, char *buf, size_t cap)
{
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, cap, "%.0f", v);
    else
        snprintf(buf, cap, "%.3f", v);
}

/* Extra keys as "key=value" pairs separated by blanks. */
static void format_extras(json_t *row, char *buf, size_t cap)
{
    static const char *const fixed[] = {"scenario", "system", "metric", "value", "unit"};
    const char *key;
    json_t *val;
    size_t len = 0;

    buf[0] = '\0';
    json_object_foreach(row, key, val)
    {
        char num[64];
        bool skip = false;

        for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
            skip |= strcmp(key, fixed[i]) == 0;
        if (skip || len >= cap)
            continue;
        format_number(json_number_value(val), num, sizeof(num));
        len += (size_t)snprintf(buf + len, cap - len, "%s%s=%s", len ? " " : "", key, num);
    }
}

static const char *row_str(json_t *row, const char *key)
{
    const char *s = json_string_value(json_object_get(row, key));

    return s != NULL ? s : "";
}

struct widths {
    int scenario, system, metric, value, unit;
};

static int max_int(int a, int b)
{
    return a > b ? a : b;
}

static void measure(json_t *rows, struct widths *w)
{
    size_t i;
    json_t *row;

    *w = (struct widths){8, 6, 6, 5, 4};
    json_array_foreach(rows, i, row)
    {
        char num[64];

        format_number(json_number_value(json_object_get(row, "value")), num, sizeof(num));
        w->scenario = max_int(w->scenario, (int)strlen(row_str(row, "scenario")));
        w->system = max_int(w->system, (int)strlen(row_str(row, "system")));
        w->metric = max_int(w->metric, (int)strlen(row_str(row, "metric")));
        w->value = max_int(w->value, (int)strlen(num));
        w->unit = max_int(w->unit, (int)strlen(row_str(row, "unit")));
    }
}

/* One table line, without trailing blanks when the last column is empty. */
static void print_line(FILE *f, const struct widths *w, const char *const col[6])
{
    char line[1024];
    size_t len;

    snprintf(line, sizeof(line), "%-*s  %-*s  %-*s  %*s  %-*s  %s", w->scenario, col[0], w->system,
             col[1], w->metric, col[2], w->value, col[3], w->unit, col[4], col[5]);
    len = strlen(line);
    while (len > 0 && line[len - 1] == ' ')
        line[--len] = '\0';
    fprintf(f, "%s\n", line);
}

void mm__results_print_table(const mm_results_t *r, FILE *f)
{
    static const char *const header[6] = {"scenario", "system", "metric",
                                          "value",    "unit",   "details"};
    struct widths w;
    size_t i;
    json_t *row;

    measure(r->rows, &w);
    print_line(f, &w, header);
    json_array_foreach(r->rows, i, row)
    {
        char num[64], extras[256];

        format_number(json_number_value(json_object_get(row, "value")), num, sizeof(num));
        format_extras(row, extras, sizeof(extras));
        print_line(f, &w,
                   (const char *const[6]){row_str(row, "scenario"), row_str(row, "system"),
                                          row_str(row, "metric"), num, row_str(row, "unit"),
                                          extras});
    }
}
