/* Unit tests for cache/fresh.c: Cache-Control parsing and freshness. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache/fresh.h"

#define NOW 1700000000
#define DATE "Tue, 14 Nov 2023 22:13:20 GMT" /* == NOW */

static void parse_directives(void **state)
{
    struct fresh_directives d;
    (void)state;
    fresh_parse("public, max-age=60, s-maxage=\"120\", stale-if-error=30, must-revalidate", &d);
    assert_int_equal(d.max_age, 60);
    assert_int_equal(d.s_maxage, 120);
    assert_int_equal(d.stale_if_error, 30);
    assert_true(d.must_revalidate);
    assert_false(d.no_store || d.no_cache || d.private_);
    fresh_parse("No-Store", &d);
    assert_true(d.no_store);
    fresh_parse("private=\"set-cookie\", no-cache", &d);
    assert_true(d.private_ && d.no_cache);
    fresh_parse("max-age=abc", &d);                 /* malformed: the safe side */
    assert_int_equal(d.max_age, 0);
    fresh_parse(NULL, &d);
    assert_int_equal(d.max_age, -1);
    assert_int_equal(d.stale_if_error, -1);
}

static struct fresh_result eval(const char *cc, const char *expires, const char *age,
                                int64_t last_modified)
{
    struct fresh_input in = {.cache_control = cc, .expires = expires, .date = DATE, .age = age,
                             .last_modified = last_modified, .now = NOW,
                             .heuristic_max_age = 300};
    struct fresh_result r;
    fresh_evaluate(&in, &r);
    return r;
}

static void lifetimes(void **state)
{
    (void)state;
    assert_int_equal(eval("max-age=100", NULL, NULL, 0).fresh_until, NOW + 100);
    assert_int_equal(eval("max-age=100, s-maxage=10", NULL, NULL, 0).fresh_until, NOW + 10);
    assert_int_equal(eval("max-age=100", NULL, "30", 0).fresh_until, NOW + 70);
    assert_int_equal(eval("max-age=10", NULL, "30", 0).fresh_until, NOW);
    assert_int_equal(eval(NULL, "Tue, 14 Nov 2023 22:23:20 GMT", NULL, 0).fresh_until, NOW + 600);
    assert_int_equal(eval(NULL, "0", NULL, 0).fresh_until, NOW);      /* invalid: expired */
    assert_int_equal(eval("no-cache, max-age=100", NULL, NULL, 0).fresh_until, NOW);
    /* heuristic: 10% of the age since Last-Modified, at most 300 s */
    assert_int_equal(eval(NULL, NULL, NULL, NOW - 1000).fresh_until, NOW + 100);
    assert_int_equal(eval(NULL, NULL, NULL, NOW - 86400).fresh_until, NOW + 300);
    assert_int_equal(eval(NULL, NULL, NULL, 0).fresh_until, NOW);     /* nothing to go on */
}

static void storable_and_stale_if_error(void **state)
{
    (void)state;
    assert_false(eval("no-store", NULL, NULL, 0).storable);
    assert_false(eval("private", NULL, NULL, 0).storable);
    assert_true(eval("public, max-age=1", NULL, NULL, 0).storable);
    assert_int_equal(eval("max-age=1, stale-if-error=600", NULL, NULL, 0).stale_if_error, 600);
    assert_int_equal(eval("max-age=1", NULL, NULL, 0).stale_if_error, -1);
    /* must-revalidate forbids serving it stale */
    assert_int_equal(eval("max-age=1, must-revalidate, stale-if-error=600", NULL, NULL, 0)
                         .stale_if_error, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_directives),
        cmocka_unit_test(lifetimes),
        cmocka_unit_test(storable_and_stale_if_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
