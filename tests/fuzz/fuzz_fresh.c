/*
 * fuzz_fresh — Cache-Control and the freshness of a stored response
 * (cache/fresh.h).
 *
 * Feeds: the input split into fields on '\n' (an empty or missing field is
 * an absent header; numbers are decimal, absent ones take the default):
 *   0 status (200)        1 Cache-Control      2 Expires        3 Date
 *   4 Age                 5 Last-Modified (an HTTP date, or decimal Unix
 *                           seconds; 0: unknown)
 *   6 request_time (NOW)  7 response_time (NOW)                 8 heuristic_max_age (300)
 *   9 flags: 'a' the request carried Authorization, 'i' immutable
 *  10 the path rule: "immutable", "revalidate", "MIN..MAX" (seconds), else none
 * to fresh_parse() and fresh_evaluate(). Times are kept within the years an
 * HTTP date can spell (0..9999), the bounds within ten years, as the daemon's
 * clock and configuration give them.
 *
 * Checks, beyond "no crash, no UB", what fresh.h promises:
 *   - fresh_parse: the delta-seconds are -1 (absent) or >= 0; drop_fields
 *     is lower case, without white space; parsing twice
 *     gives the same directives, and fresh_parse(NULL) is all absent;
 *   - storing: never no-store, unqualified private or 206; an answer to a
 *     request with Authorization only with public, s-maxage or
 *     must-revalidate; a status that is not heuristically cacheable only
 *     with explicit freshness or public; why_not is set exactly when it is
 *     not storable; adding no-store to the field makes any response
 *     unstorable and personal;
 *   - personal exactly for no-store, private and the Authorization case,
 *     and a personal response is never storable (never shared);
 *   - lifetime >= 0 or FRESH_FOREVER; initial_age >= 0, >= the response
 *     delay and >= the apparent age (response_time - Date); fresh_until is
 *     FRESH_FOREVER exactly with a FRESH_FOREVER lifetime, else
 *     response_time + max(0, lifetime - initial_age) (so >= response_time);
 *   - the lifetime: s-maxage, else max-age, else Expires - Date (never
 *     below 0) when explicit; the heuristic within [0, heuristic_max_age]
 *     (0 without Last-Modified), or within [MIN, MAX] under a range rule;
 *     0 with unqualified no-cache or the revalidate rule, which then also
 *     set always_revalidate; FRESH_FOREVER for an immutable 200 (and only
 *     for a 200), which never revalidates;
 *   - stale: no_stale exactly with unqualified no-cache, must-revalidate,
 *     proxy-revalidate or s-maxage, and then stale_if_error == 0; else the
 *     response's own stale-if-error (-1 none);
 *   - drop_fields is the parsed one.
 *
 * run.sh: -max_len=1024
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/fresh.h"
#include "cache/http_range.h"
#include "fuzz_util.h"

#define NOW 1700000000
#define MAX_TIME 253402300799LL         /* 9999-12-31T23:59:59Z */
#define TEN_YEARS (10LL * 366 * 86400)

enum {
    F_STATUS, F_CC, F_EXPIRES, F_DATE, F_AGE, F_LASTMOD, F_REQ_TIME, F_RESP_TIME,
    F_HEURISTIC, F_FLAGS, F_RULE, N_FIELDS
};

static const char *header(const char *f)
{
    return f && f[0] ? f : NULL;
}

static int64_t number(const char *f, int64_t deflt, int64_t lo, int64_t hi)
{
    if (!f || !f[0])
        return deflt;
    long long v = strtoll(f, NULL, 10);
    return v < lo ? lo : v > hi ? hi : v;
}

static int64_t last_modified(const char *f)
{
    time_t t;
    if (f && http_date_parse(f, &t) == 0)
        return t < 0 ? 0 : (int64_t)t;
    return number(f, 0, 0, MAX_TIME);
}

static void policy_of(const char *f, struct fresh_policy *p)
{
    memset(p, 0, sizeof *p);
    if (!f)
        return;
    if (strcmp(f, "immutable") == 0) {
        p->rule = FRESH_RULE_IMMUTABLE;
    } else if (strcmp(f, "revalidate") == 0) {
        p->rule = FRESH_RULE_REVALIDATE;
    } else if (strstr(f, "..")) {
        int64_t a = number(f, 0, 0, TEN_YEARS), b = number(strstr(f, "..") + 2, 0, 0, TEN_YEARS);
        p->rule = FRESH_RULE_RANGE;
        p->min_s = a < b ? a : b;       /* cfg refuses MIN > MAX */
        p->max_s = a < b ? b : a;
    }
}

static int64_t date_of(const char *s)
{
    time_t t;
    return s && http_date_parse(s, &t) == 0 ? (int64_t)t : -1;
}

static void check_directives(const char *cc, const struct fresh_directives *d)
{
    struct fresh_directives again;
    FUZZ_CHECK(d->max_age >= -1 && d->s_maxage >= -1 && d->stale_if_error >= -1,
               "'%s': max-age %" PRId64 " s-maxage %" PRId64 " stale-if-error %" PRId64, cc,
               d->max_age, d->s_maxage, d->stale_if_error);
    FUZZ_CHECK(memchr(d->drop_fields, '\0', sizeof d->drop_fields), "'%s': drop_fields unended",
               cc);
    const char *f = d->drop_fields;
    for (const char *c = f; *c; c++)
        FUZZ_CHECK(!(*c >= 'A' && *c <= 'Z') && *c != ' ' && *c != '\t',
                   "'%s': drop_fields '%s' not lower case without white space", cc, f);
    fresh_parse(cc, &again);
    FUZZ_CHECK(memcmp(&again, d, sizeof again) == 0, "'%s': parsed twice, two results", cc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_cstr(data, size), *f[N_FIELDS];
    fuzz_split(buf, '\n', f, N_FIELDS);

    struct fresh_input in = {
        .status = (long)number(f[F_STATUS], 200, 0, 999),
        .cache_control = header(f[F_CC]),
        .expires = header(f[F_EXPIRES]),
        .date = header(f[F_DATE]),
        .age = header(f[F_AGE]),
        .last_modified = last_modified(header(f[F_LASTMOD])),
        .request_time = number(f[F_REQ_TIME], NOW, 0, MAX_TIME),
        .response_time = number(f[F_RESP_TIME], NOW, 0, MAX_TIME),
        .heuristic_max_age = number(f[F_HEURISTIC], 300, 0, TEN_YEARS),
        .request_authorized = f[F_FLAGS] && strchr(f[F_FLAGS], 'a'),
        .immutable = f[F_FLAGS] && strchr(f[F_FLAGS], 'i'),
    };
    policy_of(header(f[F_RULE]), &in.policy);
    const char *cc = in.cache_control ? in.cache_control : "(none)";

    struct fresh_directives d, none;
    fresh_parse(in.cache_control, &d);
    check_directives(cc, &d);
    fresh_parse(NULL, &none);
    FUZZ_CHECK(none.max_age == -1 && none.s_maxage == -1 && none.stale_if_error == -1 &&
                   !none.no_store && !none.no_cache && !none.private_ && !none.public_ &&
                   !none.must_revalidate && !none.proxy_revalidate && !none.drop_fields[0],
               "fresh_parse(NULL) is not all absent");

    struct fresh_result r;
    memset(&r, 0x5a, sizeof r);
    fresh_evaluate(&in, &r);

    /* storing */
    int explicit_fresh = d.s_maxage >= 0 || d.max_age >= 0 || in.expires;
    int auth_only = in.request_authorized && !d.public_ && d.s_maxage < 0 && !d.must_revalidate;
    FUZZ_CHECK(r.storable == 0 || r.storable == 1, "'%s': storable %d", cc, r.storable);
    FUZZ_CHECK(r.storable == (r.why_not == NULL), "'%s': storable %d, why_not %s", cc,
               r.storable, r.why_not ? r.why_not : "(null)");
    if (d.no_store || d.private_ || in.status == 206 || auth_only)
        FUZZ_CHECK(!r.storable, "'%s' (status %ld, authorized %d): storable", cc, in.status,
                   in.request_authorized);
    if (r.storable)
        FUZZ_CHECK(fresh_status_heuristic(in.status) || explicit_fresh || d.public_,
                   "'%s': status %ld stored without explicit freshness", cc, in.status);
    FUZZ_CHECK(r.personal == (d.no_store || d.private_ || auth_only),
               "'%s' (authorized %d): personal %d", cc, in.request_authorized, r.personal);
    FUZZ_CHECK(!r.personal || !r.storable, "'%s': personal but storable", cc);

    /* lifetime and age */
    FUZZ_CHECK(r.lifetime >= 0, "'%s': lifetime %" PRId64, cc, r.lifetime);
    FUZZ_CHECK(r.initial_age >= 0, "'%s': initial_age %" PRId64, cc, r.initial_age);
    if (in.response_time > in.request_time)
        FUZZ_CHECK(r.initial_age >= in.response_time - in.request_time,
                   "'%s': initial_age %" PRId64 " below the response delay", cc, r.initial_age);
    int64_t date = date_of(in.date);
    if (date >= 0 && in.response_time > date)
        FUZZ_CHECK(r.initial_age >= in.response_time - date,
                   "'%s': initial_age %" PRId64 " below the apparent age", cc, r.initial_age);
    if (r.lifetime == FRESH_FOREVER) {
        FUZZ_CHECK(r.fresh_until == FRESH_FOREVER, "'%s': forever, fresh_until %" PRId64, cc,
                   r.fresh_until);
    } else {
        int64_t left = r.lifetime > r.initial_age ? r.lifetime - r.initial_age : 0;
        FUZZ_CHECK(r.fresh_until == in.response_time + left && r.fresh_until >= in.response_time,
                   "'%s': lifetime %" PRId64 ", initial_age %" PRId64 ", response at %" PRId64
                   ", fresh_until %" PRId64, cc, r.lifetime, r.initial_age, in.response_time,
                   r.fresh_until);
    }

    int forever = (in.immutable || in.policy.rule == FRESH_RULE_IMMUTABLE) && in.status == 200;
    int revalidate = d.no_cache || in.policy.rule == FRESH_RULE_REVALIDATE;
    if (forever) {
        FUZZ_CHECK(r.lifetime == FRESH_FOREVER && !r.always_revalidate,
                   "'%s': an immutable 200, lifetime %" PRId64 ", always_revalidate %d", cc,
                   r.lifetime, r.always_revalidate);
    } else {
        FUZZ_CHECK(r.lifetime != FRESH_FOREVER, "'%s': status %ld forever", cc, in.status);
        FUZZ_CHECK(r.always_revalidate == revalidate, "'%s': always_revalidate %d", cc,
                   r.always_revalidate);
    }
    if (!forever && revalidate) {
        FUZZ_CHECK(r.lifetime == 0, "'%s': revalidated, lifetime %" PRId64, cc, r.lifetime);
    } else if (!forever && d.s_maxage >= 0) {
        FUZZ_CHECK(r.lifetime == d.s_maxage, "'%s': lifetime %" PRId64 ", s-maxage %" PRId64,
                   cc, r.lifetime, d.s_maxage);
    } else if (!forever && d.max_age >= 0) {
        FUZZ_CHECK(r.lifetime == d.max_age, "'%s': lifetime %" PRId64 ", max-age %" PRId64, cc,
                   r.lifetime, d.max_age);
    } else if (!forever && in.expires) {
        int64_t exp = date_of(in.expires), base = date >= 0 ? date : in.response_time;
        int64_t want = exp > base ? exp - base : 0;
        FUZZ_CHECK(r.lifetime == want, "'%s': Expires '%s', Date '%s': lifetime %" PRId64
                   ", not %" PRId64, cc, in.expires, in.date ? in.date : "(none)", r.lifetime,
                   want);
    } else if (!forever && in.policy.rule == FRESH_RULE_RANGE) {
        FUZZ_CHECK(r.lifetime >= in.policy.min_s && r.lifetime <= in.policy.max_s,
                   "'%s': heuristic %" PRId64 " outside the rule's %" PRId64 "..%" PRId64, cc,
                   r.lifetime, in.policy.min_s, in.policy.max_s);
    } else if (!forever) {
        FUZZ_CHECK(r.lifetime <= in.heuristic_max_age, "'%s': heuristic %" PRId64
                   " over %" PRId64, cc, r.lifetime, in.heuristic_max_age);
        if (in.last_modified == 0)
            FUZZ_CHECK(r.lifetime == 0, "'%s': heuristic %" PRId64 " without Last-Modified",
                       cc, r.lifetime);
    }

    /* stale */
    int no_stale = d.no_cache || d.must_revalidate || d.proxy_revalidate || d.s_maxage >= 0;
    FUZZ_CHECK(r.no_stale == no_stale, "'%s': no_stale %d", cc, r.no_stale);
    FUZZ_CHECK(r.stale_if_error == (no_stale ? 0 : d.stale_if_error),
               "'%s': stale_if_error %" PRId64 " (no_stale %d, parsed %" PRId64 ")", cc,
               r.stale_if_error, r.no_stale, d.stale_if_error);
    FUZZ_CHECK(strcmp(r.drop_fields, d.drop_fields) == 0, "'%s': drop_fields '%s', parsed '%s'",
               cc, r.drop_fields, d.drop_fields);

    /* no-store added to the field (outside any quoted string) */
    size_t quotes = 0;
    for (const char *c = in.cache_control; c && *c; c++)
        quotes += *c == '"';
    if (quotes % 2 == 0) {
        size_t n = in.cache_control ? strlen(in.cache_control) : 0;
        char *more = malloc(n + 16);
        if (!more)
            abort();
        snprintf(more, n + 16, "%s, no-store", in.cache_control ? in.cache_control : "");
        struct fresh_input in2 = in;
        struct fresh_result r2;
        in2.cache_control = more;
        fresh_evaluate(&in2, &r2);
        FUZZ_CHECK(!r2.storable && r2.personal, "'%s': storable %d personal %d", more,
                   r2.storable, r2.personal);
        free(more);
    }
    free(buf);
    return 0;
}
