/*
 * log — one line per event, on stderr, as text or as one JSON object a line.
 *
 *   log_msg(L, LOG_WARN, "fill", "upstream %s answered %ld", url, status);
 *
 * text:  2026-11-23T10:00:00.123Z warn fill: upstream ... answered 404
 * json:  {"ts":"2026-11-23T10:00:00.123Z","level":"warn","area":"fill","msg":"..."}
 *
 * The logger is a value owned by the daemon's context (no global state); a
 * NULL logger logs at info level as text. Thread: any thread (one write(2)
 * per line).
 */
#ifndef EDGECACHE_LOG_H
#define EDGECACHE_LOG_H

#include "config/cfg.h"

struct logger {
    enum cfg_log_level level;
    enum cfg_log_format format;
    int fd;                     /* 2 unless a test redirects it */
};

#define LOG_ERROR CFG_LOG_ERROR
#define LOG_WARN CFG_LOG_WARN
#define LOG_INFO CFG_LOG_INFO
#define LOG_DEBUG CFG_LOG_DEBUG

void log_init(struct logger *l, enum cfg_log_level level, enum cfg_log_format fmt);

/* Credentials in URLs are never written out: the value of every query
 * parameter that signs or authorises a download (Azure SAS sig; S3
 * X-Amz-Signature, X-Amz-Credential, X-Amz-Security-Token; GCS
 * X-Goog-Signature, X-Goog-Credential; CloudFront Signature, Key-Pair-Id;
 * token, access_token) becomes "REDACTED" wherever it stands in text (a
 * log line, a /status document). Copies in to out (outlen bytes, cut to
 * fit, NUL-terminated); returns strlen(out). log_msg applies it to every
 * line. */
size_t log_redact(const char *in, char *out, size_t outlen);
/* The same into a new string (malloc'd; NULL when out of memory). */
char *log_redact_dup(const char *in);
void log_msg(const struct logger *l, enum cfg_log_level level, const char *area,
             const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
