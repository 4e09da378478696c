/*
 * http_range — Range, If-Range, If-None-Match, If-Modified-Since and HTTP
 * dates (see cache/http_range.h).
 *
 * Every parser here reads a header value through a small cursor (struct scan)
 * and refuses anything it does not fully understand: for a Range that means
 * the whole body is sent (always a correct answer), for a validator that it
 * does not match (the full answer again). Numbers saturate at UINT64_MAX
 * instead of overflowing: a first byte that large is past any end, a last
 * byte that large is clipped, a suffix that large is the whole body.
 */
#include "cache/http_range.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* A cursor over a NUL-terminated header value. */
struct scan {
    const char *p;
};

/* One syntactically valid byte-range-spec. */
struct range_spec {
    bool suffix;        /* "-n": the last n bytes (n in last) */
    bool open;          /* "a-": from a to the end */
    uint64_t first;
    uint64_t last;
};

static const char *const day_short[7] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
static const char *const day_long[7] = {
    "Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
};
static const char *const month_short[12] = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
};

/* table of contents */
static bool is_digit(char c);
static void skip_ows(struct scan *s);
static bool eat(struct scan *s, const char *lit);
static bool eat_nocase(struct scan *s, const char *lit);
static bool read_u64(struct scan *s, uint64_t *out);
static bool read_fixed(struct scan *s, int digits, int *out);
static int read_name(struct scan *s, const char *const *names, int n);
static bool range_spec_parse(const char *header, struct range_spec *r);
static bool etag_next(struct scan *s, bool *weak, const char **tag, size_t *len);
static bool etag_split(const char *etag, bool *weak, const char **tag, size_t *len);
static bool read_time(struct scan *s, struct tm *tm);
static bool date_imf(struct scan *s, struct tm *tm);
static bool date_rfc850(struct scan *s, struct tm *tm);
static bool date_asctime(struct scan *s, struct tm *tm);
static int days_in_month(int mon, int year);
static int date_finish(struct tm *tm, time_t *out);

/* ---- scanning ------------------------------------------------------------ */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static void skip_ows(struct scan *s)
{
    while (*s->p == ' ' || *s->p == '\t')
        s->p++;
}

static bool eat(struct scan *s, const char *lit)
{
    size_t n = strlen(lit);
    if (strncmp(s->p, lit, n) != 0)
        return false;
    s->p += n;
    return true;
}

static bool eat_nocase(struct scan *s, const char *lit)
{
    size_t n = strlen(lit);
    if (strncasecmp(s->p, lit, n) != 0)
        return false;
    s->p += n;
    return true;
}

/* One or more digits; the value saturates at UINT64_MAX. */
static bool read_u64(struct scan *s, uint64_t *out)
{
    if (!is_digit(*s->p))
        return false;
    uint64_t v = 0;
    for (; is_digit(*s->p); s->p++) {
        unsigned d = (unsigned)(*s->p - '0');
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
    }
    *out = v;
    return true;
}

/* Exactly `digits` digits. */
static bool read_fixed(struct scan *s, int digits, int *out)
{
    int v = 0;
    for (int i = 0; i < digits; i++) {
        if (!is_digit(s->p[i]))
            return false;
        v = v * 10 + (s->p[i] - '0');
    }
    s->p += digits;
    *out = v;
    return true;
}

/* Index of the name in names that the cursor starts with (case-sensitive,
 * as the HTTP-date grammar is), or -1. */
static int read_name(struct scan *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (eat(s, names[i]))
            return i;
    return -1;
}

/* ---- Range --------------------------------------------------------------- */

/* "bytes=a-b", "bytes=a-" or "bytes=-n", with optional whitespace around
 * the range; the unit is case-insensitive. A list of ranges is refused. */
static bool range_spec_parse(const char *header, struct range_spec *r)
{
    struct scan s = { header };
    memset(r, 0, sizeof *r);
    if (!header)
        return false;
    skip_ows(&s);
    if (!eat_nocase(&s, "bytes") || (skip_ows(&s), !eat(&s, "=")))
        return false;
    skip_ows(&s);
    if (eat(&s, "-")) {
        r->suffix = true;
        if (!read_u64(&s, &r->last))
            return false;
    } else {
        if (!read_u64(&s, &r->first) || !eat(&s, "-"))
            return false;
        r->open = !read_u64(&s, &r->last);
        if (!r->open && r->last < r->first)
            return false;
    }
    skip_ows(&s);
    return *s.p == '\0';
}

enum http_range_result http_range_parse(const char *header, uint64_t total,
                                        struct http_range *out)
{
    struct range_spec r;
    if (!range_spec_parse(header, &r))
        return HTTP_RANGE_NONE;
    if (r.suffix) {
        if (r.last == 0 || total == 0)
            return HTTP_RANGE_UNSATISFIABLE;
        out->first = r.last >= total ? 0 : total - r.last;
        out->last = total - 1;
        return HTTP_RANGE_OK;
    }
    if (r.first >= total)
        return HTTP_RANGE_UNSATISFIABLE;
    out->first = r.first;
    out->last = r.open || r.last >= total ? total - 1 : r.last;
    return HTTP_RANGE_OK;
}

bool http_range_peek(const char *header, uint64_t *first)
{
    struct range_spec r;
    if (!range_spec_parse(header, &r))
        return false;
    *first = r.suffix ? UINT64_MAX : r.first;
    return true;
}

/* ---- entity tags --------------------------------------------------------- */

/* The next entity-tag of a comma-separated list: *tag points at its opening
 * quote and len covers both quotes. False at the end or on bad syntax. */
static bool etag_next(struct scan *s, bool *weak, const char **tag, size_t *len)
{
    while (*s->p == ' ' || *s->p == '\t' || *s->p == ',')
        s->p++;
    *weak = eat(s, "W/");
    if (*s->p != '"')
        return false;
    const char *close = strchr(s->p + 1, '"');
    if (!close)
        return false;
    *tag = s->p;
    *len = (size_t)(close - s->p) + 1;
    s->p = close + 1;
    skip_ows(s);
    return *s->p == ',' || *s->p == '\0';
}

/* Splits our own ETag (W/"x" or "x") the same way. */
static bool etag_split(const char *etag, bool *weak, const char **tag, size_t *len)
{
    struct scan s = { etag };
    return etag && etag_next(&s, weak, tag, len) && *s.p == '\0';
}

bool http_if_none_match(const char *header, const char *etag)
{
    if (!header)
        return false;
    struct scan s = { header };
    skip_ows(&s);
    if (eat(&s, "*")) {
        skip_ows(&s);
        return *s.p == '\0';
    }
    bool our_weak, weak;
    const char *ours, *tag;
    size_t our_len, len;
    if (!etag_split(etag, &our_weak, &ours, &our_len))
        return false;
    while (etag_next(&s, &weak, &tag, &len))
        if (len == our_len && memcmp(tag, ours, len) == 0)
            return true;
    return false;
}

bool http_if_range(const char *header, const char *etag, time_t last_modified)
{
    if (!header)
        return true;
    struct scan s = { header };
    skip_ows(&s);
    if (*s.p == '"' || strncmp(s.p, "W/", 2) == 0) {
        bool weak, our_weak;
        const char *tag, *ours;
        size_t len, our_len;
        if (!etag_next(&s, &weak, &tag, &len) || *s.p != '\0' || weak)
            return false;
        return etag_split(etag, &our_weak, &ours, &our_len) && !our_weak &&
               len == our_len && memcmp(tag, ours, len) == 0;
    }
    time_t t;
    return last_modified != 0 && http_date_parse(s.p, &t) == 0 && t == last_modified;
}

bool http_not_modified_since(const char *header, time_t last_modified)
{
    time_t since;
    if (!header || last_modified == 0 || http_date_parse(header, &since) != 0)
        return false;
    return last_modified <= since;
}

/* ---- HTTP-date ----------------------------------------------------------- */

/* "08:49:37" */
static bool read_time(struct scan *s, struct tm *tm)
{
    return read_fixed(s, 2, &tm->tm_hour) && eat(s, ":") &&
           read_fixed(s, 2, &tm->tm_min) && eat(s, ":") &&
           read_fixed(s, 2, &tm->tm_sec);
}

/* "Sun, 06 Nov 1994 08:49:37 GMT" */
static bool date_imf(struct scan *s, struct tm *tm)
{
    int year;
    if (read_name(s, day_short, 7) < 0 || !eat(s, ", ") ||
        !read_fixed(s, 2, &tm->tm_mday) || !eat(s, " "))
        return false;
    tm->tm_mon = read_name(s, month_short, 12);
    if (tm->tm_mon < 0 || !eat(s, " ") || !read_fixed(s, 4, &year) || !eat(s, " ") ||
        !read_time(s, tm) || !eat(s, " GMT"))
        return false;
    tm->tm_year = year - 1900;
    return true;
}

/* "Sunday, 06-Nov-94 08:49:37 GMT"; years 00-69 are 2000-2069. */
static bool date_rfc850(struct scan *s, struct tm *tm)
{
    int yy;
    if (read_name(s, day_long, 7) < 0 || !eat(s, ", ") ||
        !read_fixed(s, 2, &tm->tm_mday) || !eat(s, "-"))
        return false;
    tm->tm_mon = read_name(s, month_short, 12);
    if (tm->tm_mon < 0 || !eat(s, "-") || !read_fixed(s, 2, &yy) || !eat(s, " ") ||
        !read_time(s, tm) || !eat(s, " GMT"))
        return false;
    tm->tm_year = yy < 70 ? yy + 100 : yy;
    return true;
}

/* "Sun Nov  6 08:49:37 1994" */
static bool date_asctime(struct scan *s, struct tm *tm)
{
    int year;
    if (read_name(s, day_short, 7) < 0 || !eat(s, " "))
        return false;
    tm->tm_mon = read_name(s, month_short, 12);
    if (tm->tm_mon < 0 || !eat(s, " "))
        return false;
    bool day_ok = s->p[0] == ' ' ? (s->p++, read_fixed(s, 1, &tm->tm_mday))
                                 : read_fixed(s, 2, &tm->tm_mday);
    if (!day_ok || !eat(s, " ") || !read_time(s, tm) || !eat(s, " ") ||
        !read_fixed(s, 4, &year))
        return false;
    tm->tm_year = year - 1900;
    return true;
}

static int days_in_month(int mon, int year)
{
    static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return mon == 1 && leap ? 29 : days[mon];
}

/* Converts a parsed date, refusing fields out of range ("Feb 30", "25:00").
 * Second 60 (a leap second) is allowed and rolls into the next minute.
 * timegm() returns -1 both on an error and for 1969-12-31T23:59:59Z, a
 * valid date: -1 is an error only when the fields timegm() normalised are
 * not that second (with the fields range-checked and a four-digit year,
 * a 64-bit time_t cannot overflow, so that is a safeguard). */
static int date_finish(struct tm *tm, time_t *out)
{
    if (tm->tm_hour > 23 || tm->tm_min > 59 || tm->tm_sec > 60 || tm->tm_mday < 1 ||
        tm->tm_mday > days_in_month(tm->tm_mon, tm->tm_year + 1900))
        return -1;
    time_t t = timegm(tm);
    if (t == (time_t)-1 && !(tm->tm_year == 69 && tm->tm_mon == 11 && tm->tm_mday == 31 &&
                             tm->tm_hour == 23 && tm->tm_min == 59 && tm->tm_sec == 59))
        return -1;
    *out = t;
    return 0;
}

int http_date_parse(const char *s, time_t *out)
{
    bool (*const forms[])(struct scan *, struct tm *) = {
        date_imf, date_rfc850, date_asctime,
    };
    if (!s)
        return -1;
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        struct scan sc = { s };
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        skip_ows(&sc);
        if (!forms[i](&sc, &tm))
            continue;
        skip_ows(&sc);
        if (*sc.p == '\0')
            return date_finish(&tm, out);
    }
    return -1;
}

void http_date_format(time_t t, char *buf, size_t len)
{
    struct tm tm;
    if (len == 0)
        return;
    if (!gmtime_r(&t, &tm)) {
        buf[0] = '\0';
        return;
    }
    snprintf(buf, len, "%s, %02d %s %04d %02d:%02d:%02d GMT", day_short[tm.tm_wday],
             tm.tm_mday, month_short[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
             tm.tm_min, tm.tm_sec);
}
