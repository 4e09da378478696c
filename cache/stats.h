/*
 * stats — edgecache's counters, declared once here with their documentation.
 * /metrics prints them in the Prometheus text format and /status as JSON;
 * the integration tests assert them by these names.
 *
 * Each entry: field, metric family, label set, type, help. Entries of one
 * family stand together (the exporter prints HELP and TYPE once per family).
 * The struct is owned by the daemon's context and written only on the loop
 * thread; the control plane reads it on the same thread.
 */
#ifndef EDGECACHE_STATS_H
#define EDGECACHE_STATS_H

#include <stdint.h>
#include <stdio.h>

#define STATS_ENTRIES(X)                                                                  \
    X(req_hit, "edgecache_requests_total", "cache_status=\"hit\"", "counter",             \
      "Data-plane requests by how they were answered: hit = from the store")              \
    X(req_miss, "edgecache_requests_total", "cache_status=\"miss\"", "counter", "")       \
    X(req_collapsed, "edgecache_requests_total", "cache_status=\"collapsed\"", "counter", \
      "")                                                                                 \
    X(req_pass, "edgecache_requests_total", "cache_status=\"pass\"", "counter", "")       \
    X(req_error, "edgecache_requests_total", "cache_status=\"error\"", "counter", "")     \
    X(bytes_sent_cache, "edgecache_bytes_sent_total", "source=\"cache\"", "counter",      \
      "Body bytes sent to clients: cache = from stored blobs, fill = from fills "          \
      "in progress")                                                                      \
    X(bytes_sent_fill, "edgecache_bytes_sent_total", "source=\"fill\"", "counter", "")    \
    X(upstream_bytes, "edgecache_upstream_bytes_total", "", "counter",                    \
      "Body bytes received from upstream")                                                \
    X(upstream_requests, "edgecache_upstream_requests_total", "", "counter",              \
      "Requests sent upstream")                                                           \
    X(fills_started, "edgecache_fills_started_total", "", "counter",                      \
      "Fills started (one upstream transfer per key)")                                    \
    X(fills_completed, "edgecache_fills_completed_total", "", "counter",                  \
      "Fills that received their whole answer, checked: stored, or passed on (a 404, a "  \
      "no-store answer); fills_started = completed + failed + abandoned + revalidations " \
      "(not modified) + in flight")                                                       \
    X(fills_failed, "edgecache_fills_failed_total", "", "counter",                        \
      "Fills that failed: the upstream could not be reached or broke off, the bytes "     \
      "were not what was expected, or the disk refused them")                             \
    X(fills_abandoned, "edgecache_fills_abandoned_total", "", "counter",                  \
      "Fills still running when edgecache stopped")                                       \
    X(fill_resumes, "edgecache_fill_resumes_total", "", "counter",                        \
      "Upstream requests that resumed a broken fill with Range + If-Range")               \
    X(fill_restarts, "edgecache_fill_restarts_total", "", "counter",                      \
      "Resumes the upstream answered with the whole body (200): the fill restarted")      \
    X(verify_fail_expectation, "edgecache_verify_failures_total",                         \
      "source=\"expectation\"", "counter",                                                \
      "Fills refused because their bytes did not match what was expected, by the "        \
      "source of the expectation")                                                        \
    X(verify_fail_repr_digest, "edgecache_verify_failures_total",                         \
      "source=\"repr-digest\"", "counter", "")                                            \
    X(verify_fail_content_md5, "edgecache_verify_failures_total",                         \
      "source=\"content-md5\"", "counter", "")                                            \
    X(verify_fail_content_length, "edgecache_verify_failures_total",                      \
      "source=\"content-length\"", "counter", "")                                         \
    X(unverified_refused, "edgecache_unverified_refused_total", "", "counter",            \
      "Fills refused by require_verified: no expected digest")                            \
    X(hits_by_hash, "edgecache_hits_by_hash_total", "", "counter",                        \
      "Hits served from a blob found through the key's expected SHA-256")                 \
    X(expectations_registered, "edgecache_expectations_registered_total", "", "counter",  \
      "Expectations (key -> SHA-256, size) registered")                                   \
    X(parent_fallbacks, "edgecache_parent_fallbacks_total", "", "counter",                \
      "Fills that asked the origin after the parent failed (parent_fallback_to_origin)")  \
    X(parent_forwards_ok, "edgecache_parent_forwards_total", "result=\"ok\"", "counter",  \
      "Manifests handed to the parent's control plane (parent_admin_url), by result")     \
    X(parent_forwards_failed, "edgecache_parent_forwards_total", "result=\"failed\"",     \
      "counter", "")                                                                      \
    X(revalidated, "edgecache_revalidations_total", "result=\"not-modified\"", "counter", \
      "Stale responses revalidated upstream, by result")                                  \
    X(stale_served, "edgecache_stale_served_total", "", "counter",                        \
      "Stale responses served because the upstream failed (stale-if-error)")              \
    X(relayed, "edgecache_relayed_total", "", "counter",                                  \
      "Requests with other methods relayed to the origin uncached")                       \
    X(invalidations, "edgecache_invalidations_total", "", "counter",                      \
      "Stored responses forgotten after a successful unsafe method on their URL")         \
    X(loops_refused, "edgecache_loops_refused_total", "", "counter",                      \
      "Requests answered 508: their Via already held this node")                          \
    X(evicted_objects, "edgecache_evicted_objects_total", "", "counter",                  \
      "Blobs deleted to keep the store within cache_size")                                \
    X(evicted_bytes, "edgecache_evicted_bytes_total", "", "counter",                      \
      "Bytes of blobs deleted to keep the store within cache_size")                       \
    X(purged_objects, "edgecache_purged_objects_total", "", "counter",                    \
      "Blobs purged through DELETE /api/v1/objects/{sha256}")                             \
    X(connections_refused, "edgecache_connections_refused_total", "", "counter",          \
      "Data-plane connections answered 503 because max_connections were open")           \
    X(slow_clients_dropped, "edgecache_slow_clients_dropped_total", "", "counter",        \
      "Connections closed because a request's header fields did not arrive within "       \
      "header_timeout (or its line within client_timeout)")                               \
    X(resource_errors, "edgecache_resource_errors_total", "", "counter",                  \
      "Requests or connections refused because the process ran out of file "              \
      "descriptors (ulimit -n)")                                                          \
    X(fills_in_flight, "edgecache_fills_in_flight", "", "gauge",                          \
      "Fills running now")                                                                \
    X(objects, "edgecache_objects", "", "gauge", "Blobs in the store")                    \
    X(stored_bytes, "edgecache_stored_bytes", "", "gauge", "Bytes of blobs in the store") \
    X(connections, "edgecache_client_connections", "", "gauge",                           \
      "Data-plane client connections open now")

/* A Prometheus histogram over fixed bucket bounds (seconds):
 * STATS_BUCKETS upper bounds, then +Inf. */
#define STATS_BUCKETS 12
extern const double stats_bucket_bounds[STATS_BUCKETS];

struct stats_histogram {
    uint64_t buckets[STATS_BUCKETS + 1];    /* counts per bucket (not cumulative) */
    uint64_t count;
    double sum;
};

/* How a data-plane answer came, for the time-to-first-byte histogram
 * (the labels of edgecache_time_to_first_byte_seconds{cache_status}). */
enum stats_answer {
    STATS_HIT, STATS_MISS, STATS_COLLAPSED, STATS_STALE, STATS_PASS, STATS_ERROR,
    STATS_ANSWERS
};
extern const char *const stats_answer_names[STATS_ANSWERS];

struct stats {
#define STATS_FIELD(field, family, labels, type, help) uint64_t field;
    STATS_ENTRIES(STATS_FIELD)
#undef STATS_FIELD
    /* edgecache_time_to_first_byte_seconds: request start to its answer's
     * status line queued */
    struct stats_histogram ttfb[STATS_ANSWERS];
    /* edgecache_fill_duration_seconds: a completed fill's start to its end */
    struct stats_histogram fill_duration;
    uint64_t budget_bytes;      /* edgecache_cache_budget_bytes (set at start) */
};

void stats_observe(struct stats_histogram *h, double seconds);

/* Prometheus text exposition format: the counters above, the histograms,
 * edgecache_build_info{version} and edgecache_cache_budget_bytes. */
void stats_print_prometheus(const struct stats *s, FILE *out);

#endif
