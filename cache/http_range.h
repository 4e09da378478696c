/*
 * http_range — Range, If-Range and the cache validators (RFC 9110 §13, §14).
 * Pure functions on header values; any thread.
 *
 * Only single byte ranges are served as 206: "bytes=a-b", "bytes=a-",
 * "bytes=-n". A header that is not a bytes range, or names several ranges,
 * or does not parse, is ignored (the full 200 answer is correct for it).
 */
#ifndef EDGECACHE_HTTP_RANGE_H
#define EDGECACHE_HTTP_RANGE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

enum http_range_result {
    HTTP_RANGE_NONE,            /* no usable Range: answer 200 with the whole body */
    HTTP_RANGE_OK,              /* answer 206 with [first, last] */
    HTTP_RANGE_UNSATISFIABLE,   /* answer 416 with Content-Range: bytes * / total */
};

struct http_range {
    uint64_t first;
    uint64_t last;              /* inclusive */
};

/* `header` may be NULL. total is the representation's length. A range whose
 * first byte is at or past total (or "bytes=-0") is unsatisfiable; a last
 * byte past the end is clipped to total - 1. */
enum http_range_result http_range_parse(const char *header, uint64_t total,
                                        struct http_range *out);

/* True when `header` is a syntactically valid single bytes range; sets
 * *first to its first byte (for a suffix range "-n", *first is UINT64_MAX).
 * Used before the total length is known. */
bool http_range_peek(const char *header, uint64_t *first);

/* If-None-Match: true when the list (or "*") matches etag by the weak
 * comparison. NULL header: false. */
bool http_if_none_match(const char *header, const char *etag);

/* If-Range: true when the range may be honoured — the header is a strong
 * ETag equal to etag, or an HTTP-date equal to last_modified. NULL: true. */
bool http_if_range(const char *header, const char *etag, time_t last_modified);

/* If-Modified-Since: true when the resource is NOT modified since the date
 * in header (so 304 is the answer). NULL, unparseable or last_modified 0:
 * false. */
bool http_not_modified_since(const char *header, time_t last_modified);

/* IMF-fixdate, RFC 850 and asctime forms, exactly as RFC 9110 §5.6.7 spells
 * them (optional whitespace around the whole value is tolerated). An RFC 850
 * two-digit year 00-69 is 2000-2069, 70-99 is 1970-1999. Impossible dates
 * ("31 Nov") are refused. Returns 0 on success, -1 (*out untouched). */
int http_date_parse(const char *s, time_t *out);

/* "Sun, 06 Nov 1994 08:49:37 GMT" into buf (at least 30 bytes). */
void http_date_format(time_t t, char *buf, size_t len);

#endif
