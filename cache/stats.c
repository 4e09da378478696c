/* stats — see stats.h. */
#include "cache/stats.h"

#include <string.h>

#include "version.h"

const double stats_bucket_bounds[STATS_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30,
};

const char *const stats_answer_names[STATS_ANSWERS] = {
    "hit", "miss", "collapsed", "stale", "pass", "error",
};

void stats_observe(struct stats_histogram *h, double seconds)
{
    size_t i = 0;
    while (i < STATS_BUCKETS && seconds > stats_bucket_bounds[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum += seconds > 0 ? seconds : 0;
}

static void print_histogram(FILE *out, const char *family, const char *labels,
                            const struct stats_histogram *h)
{
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (size_t i = 0; i <= STATS_BUCKETS; i++) {
        cum += h->buckets[i];
        if (i < STATS_BUCKETS)
            fprintf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", family, labels, sep,
                    stats_bucket_bounds[i], (unsigned long long)cum);
        else
            fprintf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", family, labels, sep,
                    (unsigned long long)cum);
    }
    fprintf(out, "%s_sum%s%s%s %.6f\n", family, labels[0] ? "{" : "", labels,
            labels[0] ? "}" : "", h->sum);
    fprintf(out, "%s_count%s%s%s %llu\n", family, labels[0] ? "{" : "", labels,
            labels[0] ? "}" : "", (unsigned long long)h->count);
}

static void print_extras(const struct stats *s, FILE *out)
{
    char labels[64];
    fputs("# HELP edgecache_build_info The running edgecache's version (always 1)\n"
          "# TYPE edgecache_build_info gauge\n", out);
    fprintf(out, "edgecache_build_info{version=\"%s\"} 1\n", EDGECACHE_VERSION);
    fputs("# HELP edgecache_cache_budget_bytes The store's budget (cache_size) in bytes\n"
          "# TYPE edgecache_cache_budget_bytes gauge\n", out);
    fprintf(out, "edgecache_cache_budget_bytes %llu\n", (unsigned long long)s->budget_bytes);
    fputs("# HELP edgecache_time_to_first_byte_seconds Data-plane requests: from the request "
          "to its answer's status line, by how it was answered\n"
          "# TYPE edgecache_time_to_first_byte_seconds histogram\n", out);
    for (int a = 0; a < STATS_ANSWERS; a++) {
        snprintf(labels, sizeof labels, "cache_status=\"%s\"", stats_answer_names[a]);
        print_histogram(out, "edgecache_time_to_first_byte_seconds", labels, &s->ttfb[a]);
    }
    fputs("# HELP edgecache_fill_duration_seconds Fills that completed: from their start to "
          "their last byte stored or passed on\n"
          "# TYPE edgecache_fill_duration_seconds histogram\n", out);
    print_histogram(out, "edgecache_fill_duration_seconds", "", &s->fill_duration);
}

void stats_print_prometheus(const struct stats *s, FILE *out)
{
    const char *family_open = "";
#define STATS_PRINT(field, family, labels, type, help)                     \
    if (strcmp(family_open, family) != 0) {                                \
        fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", family, help, family, \
                type);                                                     \
        family_open = family;                                              \
    }                                                                      \
    if (labels[0])                                                         \
        fprintf(out, "%s{%s} %llu\n", family, labels,                      \
                (unsigned long long)s->field);                             \
    else                                                                   \
        fprintf(out, "%s %llu\n", family, (unsigned long long)s->field);
    STATS_ENTRIES(STATS_PRINT)
#undef STATS_PRINT
    print_extras(s, out);
}
