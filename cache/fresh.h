/*
 * fresh — HTTP caching of content that may change (RFC 9111), for what is
 * not immutable: apt's InRelease and Packages, say, beside payloads whose
 * bytes never change under their URL.
 *
 * From a 200's Cache-Control, Expires, Date, Age and Last-Modified:
 *  - storable: not no-store, not private (edgecache is a shared cache);
 *  - the freshness lifetime: s-maxage, else max-age, else Expires - Date,
 *    else 10% of (Date - Last-Modified) capped by heuristic_max_age, else 0;
 *    no-cache means 0 (stored, revalidated before each use);
 *  - fresh_until = now + lifetime - the response's age, as Unix seconds;
 *    FRESH_FOREVER for immutable content (never revalidated);
 *  - stale_if_error: the response's own bound (seconds), or -1.
 * Pure functions; any thread.
 */
#ifndef EDGECACHE_FRESH_H
#define EDGECACHE_FRESH_H

#include <stdint.h>

#define FRESH_FOREVER INT64_MAX

struct fresh_directives {
    int no_store;
    int no_cache;
    int private_;
    int must_revalidate;
    int64_t max_age;            /* -1: absent */
    int64_t s_maxage;           /* -1: absent */
    int64_t stale_if_error;     /* -1: absent */
};

/* Parses a Cache-Control value (NULL: no directives). Unknown directives
 * are ignored; a malformed delta-seconds reads as 0 (the safe side). */
void fresh_parse(const char *cache_control, struct fresh_directives *d);

struct fresh_input {
    const char *cache_control;  /* each may be NULL */
    const char *expires;
    const char *date;
    const char *age;
    int64_t last_modified;      /* 0: unknown */
    int64_t now;
    int64_t heuristic_max_age;  /* seconds */
};

struct fresh_result {
    int storable;
    int64_t fresh_until;        /* Unix seconds; FRESH_FOREVER never stale */
    int64_t stale_if_error;     /* seconds, -1 when the response gave none */
};

void fresh_evaluate(const struct fresh_input *in, struct fresh_result *out);

#endif
