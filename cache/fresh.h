/*
 * fresh — what RFC 9111 says of a response a shared cache received: may it
 * be stored, how long is it fresh, how old is it, and may it be served
 * stale when the upstream fails.
 *
 * Storing (RFC 9111 §3, §3.5), for a shared cache:
 *  - never no-store, nor private without field names;
 *  - a response to a request with Authorization only with public, s-maxage
 *    or must-revalidate;
 *  - a heuristically cacheable status (RFC 9110 §15.1: 200, 203, 204, 300,
 *    301, 308, 404, 405, 410, 414, 501), or any status with explicit
 *    freshness (s-maxage, max-age, Expires) or public. 206 is never stored
 *    (fills ask for whole objects).
 *  - no-cache="f" and private="f" name fields that must not be reused: they
 *    are not stored (fresh_result.drop_fields), and the rest is.
 *
 * Freshness (§4.2): lifetime = s-maxage, else max-age, else Expires - Date,
 * else (heuristically cacheable status or public, with Last-Modified) 10%
 * of Date - Last-Modified bounded by heuristic_max_age; unqualified
 * no-cache means 0. A path rule (config key refresh) may make it immutable
 * (forever), revalidate (0 whatever the response says), or clamp a lifetime
 * the response did not give. Content whose SHA-256 is known, or from an
 * origin listed in `immutable`, is immutable too (the caller says so).
 * Immutable is a 200's property: a payload never changes under its URL,
 * but an error (a 404 before the file was published) follows HTTP.
 * Age (§4.2.3): initial_age = max(response_time - Date, Age + response
 * delay); the response is fresh while lifetime > initial_age + time since
 * response_time, i.e. until fresh_until = response_time + lifetime -
 * initial_age. A Date in the future counts as no apparent age and does not
 * stretch Expires (the lifetime is still Expires - Date).
 *
 * Serving stale (§4.2.4, RFC 5861): never with unqualified no-cache,
 * must-revalidate, proxy-revalidate or s-maxage; otherwise for up to the
 * response's own stale-if-error (0 allowed) or, without one, the
 * configured bound.
 *
 * Pure functions; any thread.
 */
#ifndef EDGECACHE_FRESH_H
#define EDGECACHE_FRESH_H

#include <stddef.h>
#include <stdint.h>

struct cfg;

#define FRESH_FOREVER INT64_MAX

struct fresh_directives {
    int no_store;
    int no_cache;               /* unqualified: revalidate every use */
    int private_;               /* unqualified */
    int public_;
    int must_revalidate;
    int proxy_revalidate;
    int64_t max_age;            /* -1: absent */
    int64_t s_maxage;           /* -1: absent */
    int64_t stale_if_error;     /* -1: absent */
    char drop_fields[256];      /* no-cache="..." and private="..." names, lower case, comma-separated */
};

/* Parses a Cache-Control value (NULL: no directives). Unknown directives
 * are ignored; a malformed delta-seconds reads as 0 (the safe side). */
void fresh_parse(const char *cache_control, struct fresh_directives *d);

/* A path rule's verdict for a URL (config key refresh). */
enum fresh_rule { FRESH_RULE_NONE, FRESH_RULE_IMMUTABLE, FRESH_RULE_REVALIDATE, FRESH_RULE_RANGE };
struct fresh_policy {
    enum fresh_rule rule;
    int64_t min_s, max_s;       /* FRESH_RULE_RANGE */
};
/* The first refresh rule of cfg that matches origin_url's path. */
void fresh_policy_for(const struct cfg *cfg, const char *origin_url, struct fresh_policy *out);

struct fresh_input {
    long status;
    const char *cache_control;  /* each may be NULL (several fields joined with ", ") */
    const char *expires;
    const char *date;
    const char *age;
    int64_t last_modified;      /* 0: unknown */
    int64_t request_time;       /* when the request went upstream */
    int64_t response_time;      /* when its answer's headers came */
    int64_t heuristic_max_age;  /* seconds */
    int request_authorized;     /* the request carried Authorization */
    int immutable;              /* known SHA-256, or an immutable origin */
    struct fresh_policy policy;
};

struct fresh_result {
    int storable;
    const char *why_not;        /* !storable: a short reason, for logs */
    int personal;               /* no-store, private, or for an Authorization only: never
                                   handed to another request, even one waiting on the fill */
    int64_t lifetime;           /* seconds; FRESH_FOREVER: never stale */
    int64_t initial_age;        /* seconds */
    int64_t fresh_until;        /* Unix seconds; FRESH_FOREVER never stale */
    int no_stale;               /* may never be served stale */
    int64_t stale_if_error;     /* the response's own bound in seconds, -1 none */
    int always_revalidate;      /* no-cache, or the revalidate rule */
    char drop_fields[256];      /* fields not to store (see fresh_directives) */
};

void fresh_evaluate(const struct fresh_input *in, struct fresh_result *out);

/* RFC 9110 §15.1: statuses cacheable by default. */
int fresh_status_heuristic(long status);

#endif
