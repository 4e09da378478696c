/*
 * http_range: Range, If-None-Match, If-Range, If-Modified-Since, HTTP dates.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cache/http_range.h"

/* Sun, 06 Nov 1994 08:49:37 GMT */
static const time_t rfc_example = 784111777;

static void expect_range(const char *header, uint64_t total, uint64_t first, uint64_t last)
{
    struct http_range r = { 12345, 12345 };
    enum http_range_result res = http_range_parse(header, total, &r);
    if (res != HTTP_RANGE_OK)
        fail_msg("\"%s\" of %llu: result %d, want OK", header, (unsigned long long)total, res);
    if (r.first != first || r.last != last)
        fail_msg("\"%s\" of %llu: %llu-%llu, want %llu-%llu", header,
                 (unsigned long long)total, (unsigned long long)r.first,
                 (unsigned long long)r.last, (unsigned long long)first,
                 (unsigned long long)last);
}

static void expect_result(const char *header, uint64_t total, enum http_range_result want)
{
    struct http_range r;
    enum http_range_result res = http_range_parse(header, total, &r);
    if (res != want)
        fail_msg("\"%s\" of %llu: result %d, want %d", header ? header : "(null)",
                 (unsigned long long)total, res, want);
}

static void range_forms(void **state)
{
    (void)state;
    expect_range("bytes=0-499", 10000, 0, 499);
    expect_range("bytes=500-999", 10000, 500, 999);
    expect_range("bytes=9500-", 10000, 9500, 9999);
    expect_range("bytes=-500", 10000, 9500, 9999);
    expect_range("bytes=0-0", 10000, 0, 0);
    expect_range("bytes=9999-9999", 10000, 9999, 9999);
    expect_range("bytes=0-", 1, 0, 0);
    /* The unit is case-insensitive; whitespace around the range is allowed. */
    expect_range("Bytes=1-2", 10, 1, 2);
    expect_range(" bytes = 1-2 ", 10, 1, 2);
    /* Sequential 1 MiB ranges of a large payload. */
    expect_range("bytes=1048576-2097151", 5000000, 1048576, 2097151);
}

static void range_clipping(void **state)
{
    (void)state;
    expect_range("bytes=0-99999", 10000, 0, 9999);
    expect_range("bytes=9000-20000", 10000, 9000, 9999);
    expect_range("bytes=-20000", 10000, 0, 9999);
    expect_range("bytes=-10000", 10000, 0, 9999);
    expect_range("bytes=-1", 10000, 9999, 9999);
}

static void range_unsatisfiable(void **state)
{
    (void)state;
    expect_result("bytes=10000-", 10000, HTTP_RANGE_UNSATISFIABLE);
    expect_result("bytes=10000-10005", 10000, HTTP_RANGE_UNSATISFIABLE);
    expect_result("bytes=20000-30000", 10000, HTTP_RANGE_UNSATISFIABLE);
    expect_result("bytes=-0", 10000, HTTP_RANGE_UNSATISFIABLE);
    expect_result("bytes=0-", 0, HTTP_RANGE_UNSATISFIABLE);
    expect_result("bytes=0-0", 0, HTTP_RANGE_UNSATISFIABLE);
    expect_result("bytes=-5", 0, HTTP_RANGE_UNSATISFIABLE);
}

static void range_ignored(void **state)
{
    (void)state;
    expect_result(NULL, 100, HTTP_RANGE_NONE);
    expect_result("", 100, HTTP_RANGE_NONE);
    expect_result("bytes=0-1,5-6", 100, HTTP_RANGE_NONE);
    expect_result("bytes=0-1, 5-6", 100, HTTP_RANGE_NONE);
    expect_result("bytes=0-1,", 100, HTTP_RANGE_NONE);
    expect_result("bytes=5-1", 100, HTTP_RANGE_NONE);
    expect_result("bytes=", 100, HTTP_RANGE_NONE);
    expect_result("bytes=-", 100, HTTP_RANGE_NONE);
    expect_result("bytes=a-b", 100, HTTP_RANGE_NONE);
    expect_result("bytes=1-2x", 100, HTTP_RANGE_NONE);
    expect_result("bytes=+1-2", 100, HTTP_RANGE_NONE);
    expect_result("bytes=1--2", 100, HTTP_RANGE_NONE);
    expect_result("bytes 0-1", 100, HTTP_RANGE_NONE);
    expect_result("items=0-1", 100, HTTP_RANGE_NONE);
    expect_result("bytesx=0-1", 100, HTTP_RANGE_NONE);
    expect_result("0-1", 100, HTTP_RANGE_NONE);
}

static void range_huge_numbers(void **state)
{
    (void)state;
    /* 2^64 - 1, 2^64 and far beyond: no wrap-around. */
    expect_range("bytes=0-18446744073709551615", 100, 0, 99);
    expect_range("bytes=0-18446744073709551616", 100, 0, 99);
    expect_range("bytes=0-99999999999999999999999999999999", 100, 0, 99);
    expect_range("bytes=-99999999999999999999999999999999", 100, 0, 99);
    expect_result("bytes=18446744073709551616-", 100, HTTP_RANGE_UNSATISFIABLE);
    expect_result("bytes=99999999999999999999999999-99999999999999999999999999999", 100,
                  HTTP_RANGE_UNSATISFIABLE);
    /* 18446744073709551616 would be 0 if it wrapped, and valid. */
    expect_result("bytes=18446744073709551616-18446744073709551617", 100,
                  HTTP_RANGE_UNSATISFIABLE);
    expect_range("bytes=18446744073709551614-", UINT64_MAX,
                 18446744073709551614ull, 18446744073709551614ull);
}

static void range_peek(void **state)
{
    (void)state;
    uint64_t first = 7;
    assert_true(http_range_peek("bytes=100-199", &first));
    assert_int_equal(first, 100);
    assert_true(http_range_peek("bytes=1048576-", &first));
    assert_int_equal(first, 1048576);
    assert_true(http_range_peek("bytes=-500", &first));
    assert_true(first == UINT64_MAX);
    assert_true(http_range_peek("bytes=99999999999999999999999-", &first));
    assert_true(first == UINT64_MAX);
    first = 7;
    assert_false(http_range_peek(NULL, &first));
    assert_false(http_range_peek("bytes=0-1,2-3", &first));
    assert_false(http_range_peek("bytes=3-1", &first));
    assert_false(http_range_peek("lines=0-1", &first));
    assert_int_equal(first, 7);
}

static void if_none_match(void **state)
{
    (void)state;
    const char *etag = "\"ab12\"";
    assert_false(http_if_none_match(NULL, etag));
    assert_true(http_if_none_match("\"ab12\"", etag));
    assert_false(http_if_none_match("\"ab13\"", etag));
    assert_false(http_if_none_match("\"ab1\"", etag));
    assert_false(http_if_none_match("ab12", etag));
    assert_true(http_if_none_match("\"x\", \"ab12\"", etag));
    assert_true(http_if_none_match("\"x\",\"y\" ,  \"ab12\"  ", etag));
    assert_false(http_if_none_match("\"x\", \"y\"", etag));
    /* Weak comparison: W/ on either side still matches. */
    assert_true(http_if_none_match("W/\"ab12\"", etag));
    assert_true(http_if_none_match("\"x\", W/\"ab12\"", etag));
    assert_true(http_if_none_match("\"ab12\"", "W/\"ab12\""));
    assert_true(http_if_none_match("*", etag));
    assert_true(http_if_none_match(" * ", etag));
    assert_false(http_if_none_match("*, \"x\"", etag));
    assert_false(http_if_none_match("", etag));
    assert_false(http_if_none_match("\"ab12\"junk", etag));
    /* An ETag with a comma inside its quotes is one tag. */
    assert_true(http_if_none_match("\"a,b\"", "\"a,b\""));
    assert_false(http_if_none_match("\"a,b\"", "\"a\""));
}

static void if_range(void **state)
{
    (void)state;
    const char *etag = "\"ab12\"";
    assert_true(http_if_range(NULL, etag, rfc_example));
    assert_true(http_if_range("\"ab12\"", etag, rfc_example));
    assert_true(http_if_range(" \"ab12\" ", etag, rfc_example));
    assert_false(http_if_range("\"ab13\"", etag, rfc_example));
    /* A weak validator never allows a range, on either side. */
    assert_false(http_if_range("W/\"ab12\"", etag, rfc_example));
    assert_false(http_if_range("\"ab12\"", "W/\"ab12\"", rfc_example));
    assert_false(http_if_range("\"ab12\", \"x\"", etag, rfc_example));
    /* A date must equal Last-Modified exactly. */
    assert_true(http_if_range("Sun, 06 Nov 1994 08:49:37 GMT", etag, rfc_example));
    assert_true(http_if_range("Sunday, 06-Nov-94 08:49:37 GMT", etag, rfc_example));
    assert_false(http_if_range("Sun, 06 Nov 1994 08:49:38 GMT", etag, rfc_example));
    assert_false(http_if_range("Sun, 06 Nov 1994 08:49:36 GMT", etag, rfc_example));
    assert_false(http_if_range("Sun, 06 Nov 1994 08:49:37 GMT", etag, 0));
    assert_false(http_if_range("yesterday", etag, rfc_example));
}

static void if_modified_since(void **state)
{
    (void)state;
    assert_true(http_not_modified_since("Sun, 06 Nov 1994 08:49:37 GMT", rfc_example));
    assert_true(http_not_modified_since("Mon, 07 Nov 1994 08:49:37 GMT", rfc_example));
    assert_false(http_not_modified_since("Sun, 06 Nov 1994 08:49:36 GMT", rfc_example));
    assert_false(http_not_modified_since(NULL, rfc_example));
    assert_false(http_not_modified_since("garbage", rfc_example));
    assert_false(http_not_modified_since("Sun, 06 Nov 1994 08:49:37 GMT", 0));
}

static void expect_date(const char *s, time_t want)
{
    time_t t = 0;
    if (http_date_parse(s, &t) != 0)
        fail_msg("\"%s\" did not parse", s);
    if (t != want)
        fail_msg("\"%s\" = %lld, want %lld", s, (long long)t, (long long)want);
}

static void date_three_formats(void **state)
{
    (void)state;
    expect_date("Sun, 06 Nov 1994 08:49:37 GMT", rfc_example);
    expect_date("Sunday, 06-Nov-94 08:49:37 GMT", rfc_example);
    expect_date("Sun Nov  6 08:49:37 1994", rfc_example);
    expect_date("Sun Nov 16 08:49:37 1994", rfc_example + 10 * 86400);
    expect_date("Thu, 01 Jan 1970 00:00:00 GMT", 0);
    expect_date("Thu, 29 Feb 2024 23:59:59 GMT", 1709251199);
    /* Two-digit years below 70 are in the 2000s. */
    expect_date("Thursday, 01-Jan-70 00:00:01 GMT", 1);
    expect_date("Saturday, 01-Jan-00 00:00:00 GMT", 946684800);
    expect_date("  Sun, 06 Nov 1994 08:49:37 GMT ", rfc_example);
}

static void date_rejects_garbage(void **state)
{
    (void)state;
    time_t t = 42;
    const char *bad[] = {
        "", "garbage", "Sun, 06 Nov 1994 08:49:37", "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 31 Nov 1994 08:49:37 GMT",
        "Sun, 29 Feb 2023 08:49:37 GMT", "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT", "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT x", "sun, 06 Nov 1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994", "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT", "1994-11-06T08:49:37Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (http_date_parse(bad[i], &t) == 0)
            fail_msg("\"%s\" parsed as %lld", bad[i], (long long)t);
    assert_int_equal(http_date_parse(NULL, &t), -1);
    assert_int_equal(t, 42);
}

static void date_format_round_trip(void **state)
{
    (void)state;
    char buf[30];
    http_date_format(rfc_example, buf, sizeof buf);
    assert_string_equal(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
    http_date_format(0, buf, sizeof buf);
    assert_string_equal(buf, "Thu, 01 Jan 1970 00:00:00 GMT");
    const time_t samples[] = { 1, 951782400, 1709251199, 1767225599, 4102444800 };
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        time_t back = 0;
        http_date_format(samples[i], buf, sizeof buf);
        assert_int_equal(strlen(buf), 29);
        assert_int_equal(http_date_parse(buf, &back), 0);
        assert_int_equal(back, samples[i]);
    }
    /* The other two forms of the same instant parse to the same time. */
    time_t a, b;
    assert_int_equal(http_date_parse("Tuesday, 29-Feb-00 00:00:00 GMT", &a), 0);
    assert_int_equal(http_date_parse("Tue Feb 29 00:00:00 2000", &b), 0);
    assert_int_equal(a, 951782400);
    assert_int_equal(b, 951782400);
    http_date_format(a, buf, sizeof buf);
    assert_string_equal(buf, "Tue, 29 Feb 2000 00:00:00 GMT");
}

/* The last second of 1969 is time_t -1, which timegm() also returns on an
 * error: it is a date like any other (found by fuzz_range). */
static void date_1969_last_second(void **state)
{
    (void)state;
    char buf[30];
    time_t back = 0;
    expect_date("Wed, 31 Dec 1969 23:59:59 GMT", -1);
    expect_date("Wed Dec 31 23:59:59 1969", -1);
    expect_date("Wed, 31 Dec 1969 23:59:58 GMT", -2);
    /* A leap second rolls into 1970: 0, not -1. */
    expect_date("Wed, 31 Dec 1969 23:59:60 GMT", 0);
    http_date_format(-1, buf, sizeof buf);
    assert_string_equal(buf, "Wed, 31 Dec 1969 23:59:59 GMT");
    assert_int_equal(http_date_parse(buf, &back), 0);
    assert_int_equal(back, -1);
    assert_true(http_if_range(buf, "\"ab12\"", -1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(range_forms),
        cmocka_unit_test(range_clipping),
        cmocka_unit_test(range_unsatisfiable),
        cmocka_unit_test(range_ignored),
        cmocka_unit_test(range_huge_numbers),
        cmocka_unit_test(range_peek),
        cmocka_unit_test(if_none_match),
        cmocka_unit_test(if_range),
        cmocka_unit_test(if_modified_since),
        cmocka_unit_test(date_three_formats),
        cmocka_unit_test(date_rejects_garbage),
        cmocka_unit_test(date_format_round_trip),
        cmocka_unit_test(date_1969_last_second),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
