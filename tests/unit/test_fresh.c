/*
 * cache/fresh.c: what RFC 9111 says of a response a shared cache received.
 * Cache-Control parsing (quoted field lists, malformed values), whether it
 * may be stored (no-store, private, Authorization, statuses), its lifetime
 * (s-maxage, max-age, Expires - Date, the bounded heuristic, no-cache), its
 * age (§4.2.3: Age, response delay, apparent age, a Date in the future),
 * whether it may be served stale, the path rules of the `refresh` config
 * key (loaded with cfg_load) and how they bend the lifetime, and which
 * responses are personal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cache/fresh.h"
#include "cache/http_range.h"
#include "config/cfg.h"

#define NOW 1700000000
#define DATE "Tue, 14 Nov 2023 22:13:20 GMT" /* == NOW */
#define HEURISTIC_MAX 300

/* An HTTP date NOW + delta seconds (rotating static buffers). */
static const char *date_at(int64_t delta)
{
    static char buf[8][40];
    static unsigned next;
    char *b = buf[next++ % 8];

    http_date_format((time_t)(NOW + delta), b, sizeof buf[0]);
    return b;
}

/* A 200 that came at once (request and response at NOW) with Date NOW. */
static struct fresh_input input(const char *cc)
{
    struct fresh_input in = {.status = 200, .cache_control = cc, .date = DATE,
                             .request_time = NOW, .response_time = NOW,
                             .heuristic_max_age = HEURISTIC_MAX};
    return in;
}

static struct fresh_result evaluate(const struct fresh_input *in)
{
    struct fresh_result r;

    memset(&r, 0x5a, sizeof r);     /* whatever is not set shows */
    fresh_evaluate(in, &r);
    return r;
}

static struct fresh_result eval_cc(const char *cc)
{
    struct fresh_input in = input(cc);

    return evaluate(&in);
}

static struct fresh_result eval_status(long status, const char *cc)
{
    struct fresh_input in = input(cc);

    in.status = status;
    return evaluate(&in);
}

/* ---- directives --------------------------------------------------------- */

static void parse_directives(void **state)
{
    struct fresh_directives d;
    (void)state;

    fresh_parse("public, max-age=60, s-maxage=\"120\", stale-if-error=30, must-revalidate", &d);
    assert_int_equal(d.max_age, 60);
    assert_int_equal(d.s_maxage, 120);          /* the quoted form too */
    assert_int_equal(d.stale_if_error, 30);
    assert_true(d.must_revalidate);
    assert_true(d.public_);
    assert_false(d.no_store || d.no_cache || d.private_ || d.proxy_revalidate);
    assert_string_equal(d.drop_fields, "");

    fresh_parse("No-Store", &d);                /* names are case-insensitive */
    assert_true(d.no_store);
    assert_int_equal(d.max_age, -1);
    fresh_parse("PROXY-REVALIDATE", &d);
    assert_true(d.proxy_revalidate);
    assert_false(d.must_revalidate);

    /* unqualified no-cache and private */
    fresh_parse("private, no-cache", &d);
    assert_true(d.private_ && d.no_cache);
    assert_string_equal(d.drop_fields, "");

    /* qualified: the fields go to drop_fields, lower case, and the
     * directive itself is not set */
    fresh_parse("no-cache=\"Set-Cookie, X-A\"", &d);
    assert_false(d.no_cache);
    assert_string_equal(d.drop_fields, "set-cookie,x-a");
    fresh_parse("private=\"x\"", &d);
    assert_false(d.private_);
    assert_string_equal(d.drop_fields, "x");
    fresh_parse("no-cache=\"Set-Cookie, X-A\", private=\"X\", max-age=5", &d);
    assert_false(d.no_cache || d.private_);
    assert_string_equal(d.drop_fields, "set-cookie,x-a,x");
    assert_int_equal(d.max_age, 5);
    /* a comma inside the quotes does not start a directive */
    fresh_parse("no-cache=\"a, max-age\"", &d);
    assert_int_equal(d.max_age, -1);
    assert_string_equal(d.drop_fields, "a,max-age");

    /* malformed delta-seconds read as 0 (the safe side) */
    fresh_parse("max-age=abc", &d);
    assert_int_equal(d.max_age, 0);
    fresh_parse("max-age=-5", &d);
    assert_int_equal(d.max_age, 0);
    fresh_parse("s-maxage=12x, stale-if-error=", &d);
    assert_int_equal(d.s_maxage, 0);
    assert_int_equal(d.stale_if_error, 0);
    /* absurdly large: at least as long as 2^31 - 1 seconds, never negative */
    fresh_parse("max-age=99999999999999999999", &d);
    assert_true(d.max_age >= 2147483647);
    /* stale-if-error=0 is a bound of its own, not "absent" */
    fresh_parse("stale-if-error=0", &d);
    assert_int_equal(d.stale_if_error, 0);

    /* unknown directives are ignored, white space is tolerated */
    fresh_parse("  foo=bar ,immutable,  max-age=7 ,, community=\"UCI\"", &d);
    assert_int_equal(d.max_age, 7);
    assert_false(d.no_store || d.no_cache || d.private_ || d.public_);

    fresh_parse(NULL, &d);
    assert_int_equal(d.max_age, -1);
    assert_int_equal(d.s_maxage, -1);
    assert_int_equal(d.stale_if_error, -1);
    assert_false(d.no_store || d.no_cache || d.private_ || d.public_ || d.must_revalidate
                 || d.proxy_revalidate);
    fresh_parse("", &d);
    assert_int_equal(d.max_age, -1);
}

/* ---- storing ------------------------------------------------------------ */

static void storability(void **state)
{
    static const long heuristic[] = {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501};
    static const long not_heuristic[] = {201, 202, 302, 303, 307, 400, 403, 500, 502, 503};
    struct fresh_input in;
    struct fresh_result r;
    (void)state;

    r = eval_cc("no-store, max-age=60");
    assert_false(r.storable);
    assert_non_null(r.why_not);
    assert_false(eval_cc("private, max-age=60").storable);
    assert_false(eval_cc("public, private").storable);
    assert_true(eval_cc("private=\"Set-Cookie\", max-age=60").storable);
    r = eval_cc("max-age=60");
    assert_true(r.storable);
    assert_null(r.why_not);
    assert_string_equal(r.drop_fields, "");
    r = eval_cc("no-cache=\"Set-Cookie\", private=\"X-User\", max-age=60");
    assert_true(r.storable);
    assert_string_equal(r.drop_fields, "set-cookie,x-user");

    /* a request with Authorization: only public, s-maxage or must-revalidate */
    in = input("max-age=60");
    in.request_authorized = 1;
    assert_false(evaluate(&in).storable);
    in.cache_control = NULL;
    assert_false(evaluate(&in).storable);
    in.cache_control = "public, max-age=60";
    assert_true(evaluate(&in).storable);
    in.cache_control = "s-maxage=60";
    assert_true(evaluate(&in).storable);
    in.cache_control = "max-age=60, must-revalidate";
    assert_true(evaluate(&in).storable);
    in.cache_control = "max-age=60, proxy-revalidate";  /* not one of the three */
    assert_false(evaluate(&in).storable);

    /* statuses */
    for (size_t i = 0; i < sizeof heuristic / sizeof heuristic[0]; i++) {
        assert_true(fresh_status_heuristic(heuristic[i]));
        if (!eval_status(heuristic[i], NULL).storable)
            fail_msg("status %ld without freshness was not storable", heuristic[i]);
    }
    for (size_t i = 0; i < sizeof not_heuristic / sizeof not_heuristic[0]; i++) {
        assert_false(fresh_status_heuristic(not_heuristic[i]));
        if (eval_status(not_heuristic[i], NULL).storable)
            fail_msg("status %ld without freshness was storable", not_heuristic[i]);
    }
    assert_false(fresh_status_heuristic(206));
    /* ... unless freshness is explicit, or public */
    assert_true(eval_status(500, "max-age=10").storable);
    assert_true(eval_status(302, "s-maxage=10").storable);
    assert_true(eval_status(302, "public").storable);
    in = input(NULL);
    in.status = 302;
    in.expires = date_at(60);
    assert_true(evaluate(&in).storable);
    assert_int_equal(evaluate(&in).lifetime, 60);
    in.status = 500;
    in.expires = "0";                           /* explicit, if already expired */
    assert_true(evaluate(&in).storable);
    assert_false(eval_status(500, "no-cache").storable);
    assert_false(eval_status(500, "must-revalidate").storable);
    /* 206 never */
    assert_false(eval_status(206, NULL).storable);
    assert_false(eval_status(206, "public, max-age=600").storable);
    in = input("public, max-age=600");
    in.status = 206;
    in.immutable = 1;
    assert_false(evaluate(&in).storable);
}

static void personal(void **state)
{
    struct fresh_input in;
    (void)state;

    assert_true(eval_cc("no-store").personal);
    assert_true(eval_cc("private").personal);
    assert_true(eval_cc("private, max-age=60").personal);
    assert_false(eval_cc("max-age=60").personal);
    assert_false(eval_cc("private=\"Set-Cookie\", max-age=60").personal);
    assert_false(eval_cc(NULL).personal);
    in = input("max-age=60");
    in.request_authorized = 1;
    assert_true(evaluate(&in).personal);
    in.cache_control = NULL;
    assert_true(evaluate(&in).personal);
    in.cache_control = "public, max-age=60";
    assert_false(evaluate(&in).personal);
    in.cache_control = "s-maxage=60";
    assert_false(evaluate(&in).personal);
    in.cache_control = "must-revalidate";
    assert_false(evaluate(&in).personal);
    /* an immutable origin does not make a private answer shareable */
    in = input("private");
    in.immutable = 1;
    assert_true(evaluate(&in).personal);
    assert_false(evaluate(&in).storable);
}

/* ---- lifetime ----------------------------------------------------------- */

static struct fresh_result eval_full(const char *cc, const char *expires, int64_t last_modified)
{
    struct fresh_input in = input(cc);

    in.expires = expires;
    in.last_modified = last_modified;
    return evaluate(&in);
}

static void lifetimes(void **state)
{
    struct fresh_result r;
    struct fresh_input in;
    (void)state;

    /* s-maxage > max-age > Expires - Date */
    r = eval_full("max-age=100, s-maxage=10", date_at(600), NOW - 1000);
    assert_int_equal(r.lifetime, 10);
    assert_int_equal(r.fresh_until, NOW + 10);
    r = eval_full("s-maxage=10, max-age=100", date_at(600), 0);
    assert_int_equal(r.lifetime, 10);
    r = eval_full("max-age=100", date_at(600), NOW - 1000);
    assert_int_equal(r.lifetime, 100);
    assert_int_equal(r.fresh_until, NOW + 100);
    r = eval_full(NULL, date_at(600), NOW - 1000);
    assert_int_equal(r.lifetime, 600);
    assert_int_equal(r.fresh_until, NOW + 600);
    /* Expires - Date, not Expires - now: Date 100 s before the answer came */
    in = input(NULL);
    in.date = date_at(-100);
    in.expires = date_at(500);
    r = evaluate(&in);
    assert_int_equal(r.lifetime, 600);
    assert_int_equal(r.initial_age, 100);
    assert_int_equal(r.fresh_until, NOW + 500);
    /* explicit freshness beats a long heuristic, even 0 */
    r = eval_full("max-age=0", NULL, NOW - 86400);
    assert_int_equal(r.lifetime, 0);
    assert_int_equal(r.fresh_until, NOW);
    /* an invalid or past Expires is expired */
    assert_int_equal(eval_full(NULL, "0", NOW - 1000).lifetime, 0);
    assert_int_equal(eval_full(NULL, "0", NOW - 1000).fresh_until, NOW);
    assert_int_equal(eval_full(NULL, date_at(-60), NOW - 1000).lifetime, 0);
    /* max-age overrides an invalid Expires */
    assert_int_equal(eval_full("max-age=30", "0", 0).lifetime, 30);
    /* without Date, the time the answer came stands for it */
    in = input(NULL);
    in.date = NULL;
    in.expires = date_at(60);
    assert_int_equal(evaluate(&in).lifetime, 60);

    /* heuristic: 10% of Date - Last-Modified, at most heuristic_max_age */
    r = eval_full(NULL, NULL, NOW - 1000);
    assert_int_equal(r.lifetime, 100);
    assert_int_equal(r.fresh_until, NOW + 100);
    assert_int_equal(eval_full(NULL, NULL, NOW - 2990).lifetime, 299);
    r = eval_full(NULL, NULL, NOW - 86400);
    assert_int_equal(r.lifetime, HEURISTIC_MAX);
    assert_int_equal(r.fresh_until, NOW + HEURISTIC_MAX);
    assert_int_equal(eval_full(NULL, NULL, 0).lifetime, 0);         /* nothing to go on */
    assert_int_equal(eval_full(NULL, NULL, 0).fresh_until, NOW);
    assert_int_equal(eval_full(NULL, NULL, NOW + 100).lifetime, 0); /* modified "later" */
    in = input(NULL);
    in.last_modified = NOW - 86400;
    in.heuristic_max_age = 0;                   /* configured off */
    assert_int_equal(evaluate(&in).lifetime, 0);
    /* measured from Date, not from when the answer came */
    in = input(NULL);
    in.date = date_at(-50);
    in.last_modified = NOW - 1050;
    r = evaluate(&in);
    assert_int_equal(r.lifetime, 100);
    assert_int_equal(r.initial_age, 50);
    assert_int_equal(r.fresh_until, NOW + 50);
    /* a status without heuristic freshness gets none, unless public */
    in = input(NULL);
    in.status = 500;
    in.last_modified = NOW - 1000;
    assert_false(evaluate(&in).storable);
    in.cache_control = "public";
    r = evaluate(&in);
    assert_true(r.storable);
    assert_int_equal(r.lifetime, 100);

    /* unqualified no-cache: stored, revalidated before every use */
    r = eval_full("no-cache, max-age=100", NULL, 0);
    assert_true(r.storable);
    assert_true(r.always_revalidate);
    assert_int_equal(r.lifetime, 0);
    assert_int_equal(r.fresh_until, NOW);
    r = eval_full("no-cache", date_at(600), NOW - 1000);
    assert_true(r.always_revalidate);
    assert_int_equal(r.lifetime, 0);
    /* qualified no-cache is no such thing */
    r = eval_full("no-cache=\"Set-Cookie\", max-age=100", NULL, 0);
    assert_false(r.always_revalidate);
    assert_int_equal(r.lifetime, 100);
    assert_false(eval_cc("max-age=100").always_revalidate);

    /* known content never goes stale */
    in = input("max-age=10");
    in.immutable = 1;
    r = evaluate(&in);
    assert_true(r.lifetime == FRESH_FOREVER);
    assert_true(r.fresh_until == FRESH_FOREVER);
    assert_false(r.always_revalidate);
}

/* ---- age (RFC 9111 §4.2.3) ---------------------------------------------- */

static void ages(void **state)
{
    struct fresh_input in;
    struct fresh_result r;
    (void)state;

    /* the Age header */
    in = input("max-age=100");
    in.age = "30";
    r = evaluate(&in);
    assert_int_equal(r.initial_age, 30);
    assert_int_equal(r.fresh_until, NOW + 70);
    in.cache_control = "max-age=10";
    r = evaluate(&in);
    assert_int_equal(r.initial_age, 30);
    assert_int_equal(r.fresh_until, NOW);       /* already stale, never before it came */
    in.age = "abc";                             /* malformed: no age */
    in.cache_control = "max-age=100";
    assert_int_equal(evaluate(&in).initial_age, 0);

    /* the response delay is added to Age: the corrected age value */
    in = input("max-age=100");
    in.request_time = NOW - 5;
    in.age = "30";
    r = evaluate(&in);
    assert_int_equal(r.initial_age, 35);
    assert_int_equal(r.fresh_until, NOW + 65);
    in.age = NULL;                              /* the delay alone */
    assert_int_equal(evaluate(&in).initial_age, 5);

    /* the apparent age: response_time - Date, when larger */
    in = input("max-age=100");
    in.date = date_at(-40);
    in.age = "10";
    r = evaluate(&in);
    assert_int_equal(r.initial_age, 40);
    assert_int_equal(r.fresh_until, NOW + 60);
    in.age = "50";                              /* Age larger than the apparent age */
    r = evaluate(&in);
    assert_int_equal(r.initial_age, 50);
    assert_int_equal(r.fresh_until, NOW + 50);

    /* fresh_until counts from response_time, whatever the request time */
    in = input("max-age=100");
    in.request_time = NOW + 1000;               /* a clock step: no negative delay */
    in.response_time = NOW + 1000;
    in.date = date_at(1000);
    r = evaluate(&in);
    assert_int_equal(r.initial_age, 0);
    assert_int_equal(r.fresh_until, NOW + 1100);

    /* a Date in the future: no apparent age, and Expires is not stretched */
    in = input(NULL);
    in.date = date_at(3600);
    in.expires = date_at(3660);
    r = evaluate(&in);
    assert_int_equal(r.lifetime, 60);
    assert_int_equal(r.initial_age, 0);
    assert_int_equal(r.fresh_until, NOW + 60);
    in.age = "20";                              /* Age still counts */
    r = evaluate(&in);
    assert_int_equal(r.initial_age, 20);
    assert_int_equal(r.fresh_until, NOW + 40);
    in = input("max-age=100");
    in.date = date_at(3600);
    r = evaluate(&in);
    assert_int_equal(r.initial_age, 0);
    assert_int_equal(r.fresh_until, NOW + 100);
    /* an unparseable Date is no apparent age either */
    in.date = "yesterday";
    r = evaluate(&in);
    assert_int_equal(r.initial_age, 0);
    assert_int_equal(r.fresh_until, NOW + 100);
}

/* ---- serving stale ------------------------------------------------------ */

static void stale_rules(void **state)
{
    struct fresh_result r;
    (void)state;

    r = eval_cc("max-age=1");
    assert_false(r.no_stale);
    assert_int_equal(r.stale_if_error, -1);     /* the configured bound applies */
    r = eval_cc("max-age=1, stale-if-error=600");
    assert_false(r.no_stale);
    assert_int_equal(r.stale_if_error, 600);
    r = eval_cc("max-age=1, stale-if-error=0");
    assert_false(r.no_stale);
    assert_int_equal(r.stale_if_error, 0);      /* its own bound: not -1 */

    assert_true(eval_cc("no-cache").no_stale);
    assert_true(eval_cc("max-age=1, must-revalidate, stale-if-error=600").no_stale);
    assert_true(eval_cc("max-age=1, proxy-revalidate").no_stale);
    assert_true(eval_cc("s-maxage=60, stale-if-error=600").no_stale);
    assert_true(eval_cc("s-maxage=0").no_stale);
    /* never stale means no stale-if-error bound is granted */
    r = eval_cc("max-age=1, must-revalidate, stale-if-error=600");
    assert_int_equal(r.stale_if_error, 0);
    /* qualified no-cache does not forbid it */
    r = eval_cc("no-cache=\"Set-Cookie\", max-age=1, stale-if-error=60");
    assert_false(r.no_stale);
    assert_int_equal(r.stale_if_error, 60);
    assert_false(eval_cc(NULL).no_stale);
}

/* ---- path rules ---------------------------------------------------------- */

#define ARGV(...) ((char *[]){ "edgecache", __VA_ARGS__, NULL })

static void load_cfg(struct cfg *c, char **argv)
{
    char err[512] = "";
    char *env[] = {NULL};
    int argc = 0;

    while (argv[argc])
        argc++;
    if (cfg_load(c, argc, argv, env, stdout, err, sizeof err) != CFG_OK)
        fail_msg("cfg_load: %s", err);
}

static struct fresh_policy policy(const struct cfg *c, const char *url)
{
    struct fresh_policy p;

    memset(&p, 0x5a, sizeof p);
    fresh_policy_for(c, url, &p);
    return p;
}

static void assert_rule(const struct cfg *c, const char *url, enum fresh_rule rule)
{
    struct fresh_policy p = policy(c, url);

    if (p.rule != rule)
        fail_msg("%s: rule %d, expected %d", url, (int)p.rule, (int)rule);
}

static void default_path_rules(void **state)
{
    struct cfg c;
    (void)state;

    load_cfg(&c, ARGV("--cache-dir", "/tmp/unused"));
    assert_true(c.n_refresh > 0);
    assert_rule(&c, "http://deb.debian.org/debian/pool/main/h/hello/hello_2.10-3_amd64.deb",
                FRESH_RULE_IMMUTABLE);
    assert_rule(&c, "http://h/fw/image.swu", FRESH_RULE_IMMUTABLE);
    assert_rule(&c, "http://deb.debian.org/debian/dists/stable/InRelease",
                FRESH_RULE_REVALIDATE);
    assert_rule(&c, "http://deb.debian.org/debian/dists/stable/main/binary-amd64/Packages.xz",
                FRESH_RULE_REVALIDATE);
    assert_rule(&c, "http://h/alpine/v3.19/main/x86_64/APKINDEX.tar.gz",
                FRESH_RULE_REVALIDATE);
    assert_rule(&c, "http://h/dists/stable/by-hash/SHA256/xyz", FRESH_RULE_IMMUTABLE);
    assert_rule(&c, "http://h/debian/dists/stable/main/binary-amd64/by-hash/SHA256/abc",
                FRESH_RULE_IMMUTABLE);
    /* a name pattern matches the last segment only, never a directory */
    assert_rule(&c, "http://h/pool/x.deb/README", FRESH_RULE_NONE);
    assert_rule(&c, "http://h/dists/InRelease/notes.txt", FRESH_RULE_NONE);
    assert_rule(&c, "http://h/dists/stable/InRelease.txt", FRESH_RULE_NONE);
    assert_rule(&c, "http://h/index.html", FRESH_RULE_NONE);
    assert_rule(&c, "http://h", FRESH_RULE_NONE);
    assert_rule(&c, "http://h/", FRESH_RULE_NONE);
    /* the query is never part of the path */
    assert_rule(&c, "https://a.blob.core.windows.net/c/x.deb?sig=abc&se=1", FRESH_RULE_IMMUTABLE);
    assert_rule(&c, "http://h/dists/stable/InRelease?v=x.deb", FRESH_RULE_REVALIDATE);
    assert_rule(&c, "http://h/readme?name=x.deb", FRESH_RULE_NONE);
    /* without a configuration or a URL: no rule */
    assert_int_equal(policy(NULL, "http://h/x.deb").rule, FRESH_RULE_NONE);
    assert_int_equal(policy(&c, NULL).rule, FRESH_RULE_NONE);
    cfg_free(&c);
}

static void configured_path_rules(void **state)
{
    struct cfg c;
    struct fresh_policy p;
    (void)state;

    load_cfg(&c, ARGV("--cache-dir", "/tmp/unused", "--refresh",
                      "/api/*.json=immutable /api/*=1m..1h *.json=10s..20s "
                      "/repo/*/repodata/*=revalidate"));
    assert_int_equal(c.n_refresh, 4);
    /* the first rule that matches decides */
    assert_rule(&c, "http://h/api/v1/list.json", FRESH_RULE_IMMUTABLE);
    p = policy(&c, "http://h/api/v1/list");
    assert_int_equal(p.rule, FRESH_RULE_RANGE);
    assert_int_equal(p.min_s, 60);
    assert_int_equal(p.max_s, 3600);
    p = policy(&c, "http://h/data/x.json?x=1");
    assert_int_equal(p.rule, FRESH_RULE_RANGE);
    assert_int_equal(p.min_s, 10);
    assert_int_equal(p.max_s, 20);
    /* a pattern with '/' matches the whole path, from its start */
    assert_rule(&c, "http://h/other/api/list", FRESH_RULE_NONE);
    assert_rule(&c, "http://h/repo/fedora/repodata/repomd.xml", FRESH_RULE_REVALIDATE);
    assert_rule(&c, "http://h/repo/repodata", FRESH_RULE_NONE);
    /* the list replaced the defaults */
    assert_rule(&c, "http://h/pool/x.deb", FRESH_RULE_NONE);
    cfg_free(&c);
}

/* ---- rules and freshness ------------------------------------------------- */

static struct fresh_input with_rule(const char *cc, enum fresh_rule rule, int64_t min_s,
                                    int64_t max_s)
{
    struct fresh_input in = input(cc);

    in.policy.rule = rule;
    in.policy.min_s = min_s;
    in.policy.max_s = max_s;
    return in;
}

static void rules_bend_the_lifetime(void **state)
{
    struct fresh_input in;
    struct fresh_result r;
    (void)state;

    /* RANGE clamps a heuristic lifetime both ways, instead of
     * heuristic_max_age */
    in = with_rule(NULL, FRESH_RULE_RANGE, 300, 600);
    in.last_modified = NOW - 1000;              /* heuristic 100 */
    r = evaluate(&in);
    assert_int_equal(r.lifetime, 300);
    assert_int_equal(r.fresh_until, NOW + 300);
    in.last_modified = NOW - 100000;            /* heuristic 10000 */
    assert_int_equal(evaluate(&in).lifetime, 600);
    in.last_modified = NOW - 4500;              /* heuristic 450: kept, past heuristic_max_age */
    assert_int_equal(evaluate(&in).lifetime, 450);
    in.last_modified = 0;                       /* no heuristic at all: the minimum */
    assert_int_equal(evaluate(&in).lifetime, 300);
    /* ... and never overrides explicit freshness */
    in = with_rule("max-age=5", FRESH_RULE_RANGE, 300, 600);
    in.last_modified = NOW - 1000;
    assert_int_equal(evaluate(&in).lifetime, 5);
    in.cache_control = "max-age=100000";
    assert_int_equal(evaluate(&in).lifetime, 100000);
    in.cache_control = "s-maxage=0";
    assert_int_equal(evaluate(&in).lifetime, 0);
    in.cache_control = NULL;
    in.expires = date_at(30);
    assert_int_equal(evaluate(&in).lifetime, 30);
    in.expires = "0";
    assert_int_equal(evaluate(&in).lifetime, 0);
    /* no-cache still means revalidate */
    in = with_rule("no-cache", FRESH_RULE_RANGE, 300, 600);
    in.last_modified = NOW - 1000;
    r = evaluate(&in);
    assert_true(r.always_revalidate);
    assert_int_equal(r.lifetime, 0);

    /* revalidate: 0 whatever the response says */
    in = with_rule("max-age=3600", FRESH_RULE_REVALIDATE, 0, 0);
    r = evaluate(&in);
    assert_true(r.storable);
    assert_true(r.always_revalidate);
    assert_int_equal(r.lifetime, 0);
    assert_int_equal(r.fresh_until, NOW);
    in.cache_control = NULL;
    in.last_modified = NOW - 86400;
    assert_int_equal(evaluate(&in).lifetime, 0);

    /* immutable: forever, whatever the response says of freshness */
    in = with_rule("no-cache, max-age=0", FRESH_RULE_IMMUTABLE, 0, 0);
    r = evaluate(&in);
    assert_true(r.storable);
    assert_false(r.always_revalidate);
    assert_true(r.lifetime == FRESH_FOREVER);
    assert_true(r.fresh_until == FRESH_FOREVER);
    in.cache_control = NULL;
    in.expires = "0";
    assert_true(evaluate(&in).fresh_until == FRESH_FOREVER);
    /* an immutable input (known SHA-256, immutable origin) overrides no-cache */
    in = input("no-cache");
    in.immutable = 1;
    r = evaluate(&in);
    assert_false(r.always_revalidate);
    assert_true(r.lifetime == FRESH_FOREVER);
    assert_true(r.fresh_until == FRESH_FOREVER);
    in.policy.rule = FRESH_RULE_REVALIDATE;     /* and a revalidate rule */
    assert_true(evaluate(&in).fresh_until == FRESH_FOREVER);
    /* no-store and private hold */
    in = with_rule("no-store", FRESH_RULE_IMMUTABLE, 0, 0);
    assert_false(evaluate(&in).storable);
    in.cache_control = "private";
    assert_false(evaluate(&in).storable);
    in.cache_control = NULL;
    in.status = 206;
    assert_false(evaluate(&in).storable);
}

/* The path of a URL and the rules combined, as a fill does it. */
static void policy_from_config_drives_evaluation(void **state)
{
    struct cfg c;
    struct fresh_input in;
    (void)state;

    load_cfg(&c, ARGV("--cache-dir", "/tmp/unused", "--refresh",
                      "*.deb=immutable InRelease=revalidate *.json=10m..1h"));
    in = input("max-age=60");
    fresh_policy_for(&c, "http://h/pool/a.deb", &in.policy);
    assert_true(evaluate(&in).fresh_until == FRESH_FOREVER);
    in = input("max-age=3600");
    fresh_policy_for(&c, "http://h/dists/stable/InRelease", &in.policy);
    assert_int_equal(evaluate(&in).fresh_until, NOW);
    in = input(NULL);
    in.last_modified = NOW - 1000;
    fresh_policy_for(&c, "http://h/meta/index.json", &in.policy);
    assert_int_equal(evaluate(&in).lifetime, 600);
    in = input(NULL);
    in.last_modified = NOW - 1000;
    fresh_policy_for(&c, "http://h/meta/index.html", &in.policy);
    assert_int_equal(evaluate(&in).lifetime, 100);
    cfg_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_directives),
        cmocka_unit_test(storability),
        cmocka_unit_test(personal),
        cmocka_unit_test(lifetimes),
        cmocka_unit_test(ages),
        cmocka_unit_test(stale_rules),
        cmocka_unit_test(default_path_rules),
        cmocka_unit_test(configured_path_rules),
        cmocka_unit_test(rules_bend_the_lifetime),
        cmocka_unit_test(policy_from_config_drives_evaluation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
