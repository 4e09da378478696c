/*
 * fuzz_range — Range, the validators and HTTP dates (cache/http_range.h).
 *
 * Feeds: the input split into fields on '\n' (a missing field is a NULL
 * header, an empty one ""):
 *   0 Range            1 total length (decimal)   2 our ETag
 *   3 If-None-Match    4 If-Range                 5 If-Modified-Since
 *   6 Last-Modified (decimal time_t)
 * to http_range_parse, http_range_peek, http_if_none_match, http_if_range,
 * http_not_modified_since, and every field to http_date_parse.
 *
 * Checks, beyond "no crash, no UB":
 *   - a parsed range lies within the total: first <= last < total;
 *     UNSATISFIABLE only when the range starts at or past the total (or
 *     is a zero suffix, or the total is 0); peek agrees with parse (valid
 *     syntax exactly when parse is not NONE, the same first byte for a
 *     non-suffix range, and peek leaves *first alone when it says no);
 *   - a date that parses formats (29 characters, IMF-fixdate) and
 *     re-parses to the same time_t, and If-Range with that date and
 *     If-Modified-Since agree with comparing the times;
 *   - If-Range with our own strong ETag is honoured, a NULL If-Range is
 *     honoured, "*" and a strong If-Range match mean If-None-Match
 *     matches too; NULL If-None-Match never matches.
 *
 * run.sh: -max_len=1024
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/http_range.h"
#include "fuzz_util.h"

enum { F_RANGE, F_TOTAL, F_ETAG, F_INM, F_IF_RANGE, F_IMS, F_LASTMOD, N_FIELDS };

static uint64_t parse_total(const char *s)
{
    return s ? strtoull(s, NULL, 10) : 0;
}

static time_t parse_time(const char *s)
{
    return s ? (time_t)strtoll(s, NULL, 10) : 0;
}

static void check_range(const char *hdr, uint64_t total)
{
    struct http_range r = { 12345, 12345 };
    uint64_t first = 777;
    enum http_range_result res = http_range_parse(hdr, total, &r);
    bool valid = http_range_peek(hdr, &first);

    FUZZ_CHECK(res == HTTP_RANGE_NONE || res == HTTP_RANGE_OK ||
                   res == HTTP_RANGE_UNSATISFIABLE,
               "range '%s': result %d", hdr, res);
    FUZZ_CHECK(valid == (res != HTTP_RANGE_NONE), "range '%s' of %" PRIu64
               ": peek %d, parse %d", hdr, total, valid, res);
    if (!valid)
        FUZZ_CHECK(first == 777, "range '%s': peek said no but set first", hdr);
    if (res == HTTP_RANGE_OK) {
        FUZZ_CHECK(r.first <= r.last && r.last < total,
                   "range '%s' of %" PRIu64 ": %" PRIu64 "-%" PRIu64 " out of bounds", hdr,
                   total, r.first, r.last);
        if (first != UINT64_MAX)
            FUZZ_CHECK(first == r.first, "range '%s': peek first %" PRIu64 ", parse %" PRIu64,
                       hdr, first, r.first);
    }
    /* 416 for a first-byte range only when it starts at or past the end
     * (first is UINT64_MAX for a suffix range or a saturated first byte). */
    if (res == HTTP_RANGE_UNSATISFIABLE && first != UINT64_MAX)
        FUZZ_CHECK(first >= total, "range '%s' of %" PRIu64 " starts at %" PRIu64
                   " but is 416", hdr, total, first);
    /* Any satisfiable start is satisfiable with a larger total. */
    if (res == HTTP_RANGE_OK && total < UINT64_MAX) {
        struct http_range r2;
        FUZZ_CHECK(http_range_parse(hdr, total + 1, &r2) == HTTP_RANGE_OK,
                   "range '%s': OK of %" PRIu64 " but not of one more", hdr, total);
    }
}

/* A date that parses formats and re-parses to the same time. */
static void check_date(const char *s, const char *etag, time_t last_modified)
{
    time_t t = 42, back = 0;
    char buf[64];
    if (!s)
        return;
    if (http_date_parse(s, &t) != 0) {
        FUZZ_CHECK(t == 42, "date '%s' refused but *out was written", s);
        return;
    }
    http_date_format(t, buf, sizeof buf);
    FUZZ_CHECK(strlen(buf) == 29, "date '%s' = %lld formats as '%s'", s, (long long)t, buf);
    FUZZ_CHECK(http_date_parse(buf, &back) == 0 && back == t,
               "date '%s' = %lld formats as '%s' which parses to %lld", s, (long long)t, buf,
               (long long)back);
    FUZZ_CHECK(http_not_modified_since(s, t) == (t != 0),
               "If-Modified-Since '%s' vs its own time %lld", s, (long long)t);
    FUZZ_CHECK(http_not_modified_since(buf, last_modified) ==
                   (last_modified != 0 && last_modified <= t),
               "If-Modified-Since '%s' vs %lld", buf, (long long)last_modified);
    FUZZ_CHECK(http_if_range(buf, etag, last_modified) == (last_modified != 0 &&
                                                           last_modified == t),
               "If-Range '%s' vs %lld", buf, (long long)last_modified);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_cstr(data, size), *f[N_FIELDS];
    fuzz_split(buf, '\n', f, N_FIELDS);
    uint64_t total = parse_total(f[F_TOTAL]);
    time_t lm = parse_time(f[F_LASTMOD]);
    const char *etag = f[F_ETAG];

    check_range(f[F_RANGE], total);
    check_range(f[F_RANGE], 0);
    check_range(f[F_RANGE], UINT64_MAX);

    bool inm = http_if_none_match(f[F_INM], etag);
    bool ir = http_if_range(f[F_IF_RANGE], etag, lm);
    if (!f[F_IF_RANGE])
        FUZZ_CHECK(ir, "NULL If-Range not honoured");
    FUZZ_CHECK(!http_if_none_match(NULL, etag), "NULL If-None-Match matched");
    if (etag && http_if_range(etag, etag, 0))
        FUZZ_CHECK(http_if_none_match(etag, etag),
                   "ETag '%s' honours If-Range but does not match If-None-Match", etag);
    if (f[F_INM] && strcmp(f[F_INM], "*") == 0)
        FUZZ_CHECK(inm, "If-None-Match * did not match");
    (void)http_not_modified_since(f[F_IMS], lm);

    for (size_t i = 0; i < N_FIELDS; i++)
        check_date(f[i], etag, lm);

    /* http_date_format of the Last-Modified field itself, kept within the
     * years the format can spell (0000..9999); -1 (the last second of 1969,
     * timegm's error value) included. */
    if (lm >= -62167219200LL && lm <= 253402300799LL) {
        char out[64];
        time_t back = 0;
        http_date_format(lm, out, sizeof out);
        FUZZ_CHECK(http_date_parse(out, &back) == 0 && back == lm,
                   "%lld formats as '%s', parses to %lld", (long long)lm, out,
                   (long long)back);
    }
    free(buf);
    return 0;
}
