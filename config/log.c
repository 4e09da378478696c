/*
 * log.c — one event, one line, one write(2).
 *
 * A line is assembled in a fixed buffer on the caller's stack and written
 * with a single write(2), so lines from different threads never interleave
 * (LOG_LINE_MAX is PIPE_BUF: a write of that size to a pipe is atomic).
 * A message that does not fit is cut and marked " [truncated]"; the line
 * still ends properly (a closing brace in JSON, a newline in both formats).
 *
 * Escaping: a log line must stay one line and, in JSON, one valid object,
 * whatever a message carries (URLs and headers come from the network).
 * Text escapes control characters (\n, \r, \t, \xNN). JSON escapes quotes,
 * backslashes and control characters, and replaces bytes that are not valid
 * UTF-8 with U+FFFD.
 */
#include "config/log.h"

#include <stdlib.h>

#include <strings.h>

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX PIPE_BUF
#define LOG_MSG_MAX LOG_LINE_MAX
#define TRUNCATED " [truncated]"
#define JSON_TAIL "\"}\n"

/* A line being built. Appends that do not fit below `limit` are refused
 * whole and set `truncated`; the bytes above `limit` are kept for the
 * truncation mark and the line's ending. */
struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
    size_t limit;
    bool truncated;
};

static void put(struct line *l, const char *s, size_t n);
static void put_str(struct line *l, const char *s);
static void put_text_escaped(struct line *l, const char *s);
static void put_json_escaped(struct line *l, const char *s);
static size_t utf8_sequence(const unsigned char *s, size_t n);
static void format_timestamp(char *buf, size_t len);
static const char *level_name(enum cfg_log_level level);
static void finish(struct line *l, const char *tail);
static void write_line(int fd, const struct line *l);

void log_init(struct logger *l, enum cfg_log_level level, enum cfg_log_format fmt)
{
    l->level = level;
    l->format = fmt;
    l->fd = 2;
}

static void put(struct line *l, const char *s, size_t n)
{
    if (l->truncated || l->len + n > l->limit) {
        l->truncated = true;
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

static void put_text_escaped(struct line *l, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p >= 0x20 && *p != 0x7f) {
            put(l, (const char *)p, 1);
            continue;
        }
        if (*p == '\n' || *p == '\r' || *p == '\t')
            snprintf(esc, sizeof esc, "\\%c", *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't');
        else
            snprintf(esc, sizeof esc, "\\x%02x", *p);
        put_str(l, esc);
    }
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid
 * (bad lead or continuation byte, overlong form, surrogate, above U+10FFFF). */
static size_t utf8_sequence(const unsigned char *s, size_t n)
{
    static const struct { unsigned char mask, lead; size_t len; unsigned min; } forms[] = {
        { 0xe0, 0xc0, 2, 0x80 }, { 0xf0, 0xe0, 3, 0x800 }, { 0xf8, 0xf0, 4, 0x10000 },
    };
    for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
        if ((s[0] & forms[f].mask) != forms[f].lead)
            continue;
        size_t len = forms[f].len;
        unsigned cp = s[0] & (unsigned char)~forms[f].mask;
        if (n < len)
            return 0;
        for (size_t i = 1; i < len; i++) {
            if ((s[i] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i] & 0x3f);
        }
        bool ok = cp >= forms[f].min && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
        return ok ? len : 0;
    }
    return 0;
}

static void put_json_escaped(struct line *l, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t left = strlen(s);
    while (left > 0) {
        char esc[8];
        size_t n = 1;
        if (*p == '"' || *p == '\\')
            snprintf(esc, sizeof esc, "\\%c", *p);
        else if (*p == '\n' || *p == '\r' || *p == '\t')
            snprintf(esc, sizeof esc, "\\%c", *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't');
        else if (*p < 0x20)
            snprintf(esc, sizeof esc, "\\u%04x", *p);
        else if (*p < 0x80)
            snprintf(esc, sizeof esc, "%c", *p);
        else if ((n = utf8_sequence(p, left)) > 0) {
            memcpy(esc, p, n);
            esc[n] = '\0';
        } else {
            snprintf(esc, sizeof esc, "\\ufffd");
            n = 1;
        }
        put_str(l, esc);
        p += n;
        left -= n;
    }
}

static void format_timestamp(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static const char *level_name(enum cfg_log_level level)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    unsigned i = (unsigned)level;
    return i < sizeof names / sizeof names[0] ? names[i] : "info";
}

/* Marks a cut line and appends its ending, into the space kept for both. */
static void finish(struct line *l, const char *tail)
{
    l->limit = sizeof l->buf;
    if (l->truncated) {
        l->truncated = false;
        put_str(l, TRUNCATED);
    }
    put_str(l, tail);
}

static void write_line(int fd, const struct line *l)
{
    ssize_t w;
    do
        w = write(fd, l->buf, l->len);
    while (w < 0 && errno == EINTR);
}

static const char *const secret_params[] = {
    "sig", "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token",
    "X-Goog-Signature", "X-Goog-Credential", "Signature", "Key-Pair-Id", "token",
    "access_token",
};

/* The length of a secret parameter's name at p (just after '?' or '&'),
 * with its '=', or 0. */
static size_t secret_at(const char *p)
{
    for (size_t i = 0; i < sizeof secret_params / sizeof secret_params[0]; i++) {
        size_t n = strlen(secret_params[i]);
        if (strncasecmp(p, secret_params[i], n) == 0 && p[n] == '=')
            return n + 1;
    }
    return 0;
}

size_t log_redact(const char *in, char *out, size_t outlen)
{
    static const char mask[] = "REDACTED";
    size_t w = 0;
    if (outlen == 0)
        return 0;
    for (const char *p = in; *p && w + 1 < outlen;) {
        out[w++] = *p;
        size_t name = (*p == '?' || *p == '&') ? secret_at(p + 1) : 0;
        p++;
        if (!name)
            continue;
        for (size_t i = 0; i < name && w + 1 < outlen; i++)
            out[w++] = *p++;
        size_t vlen = strcspn(p, "&#\" \t\r\n,;)<>'\\");
        if (vlen) {
            for (size_t i = 0; mask[i] && w + 1 < outlen; i++)
                out[w++] = mask[i];
            p += vlen;
        }
    }
    out[w] = '\0';
    return w;
}

char *log_redact_dup(const char *in)
{
    size_t cap = strlen(in) + 64;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    /* a value shorter than the mask can grow the text: give it room */
    size_t secrets = 0;
    for (const char *p = in; (p = strpbrk(p, "?&")); p++)
        secrets += secret_at(p + 1) != 0;
    if (secrets * 8 > 64) {
        char *bigger = realloc(out, cap + secrets * 8);
        if (!bigger) {
            free(out);
            return NULL;
        }
        out = bigger;
        cap += secrets * 8;
    }
    log_redact(in, out, cap);
    return out;
}

void log_msg(const struct logger *l, enum cfg_log_level level, const char *area,
             const char *fmt, ...)
{
    struct logger fallback;
    char msg[LOG_MSG_MAX], ts[40];
    struct line line = { .limit = sizeof line.buf - sizeof TRUNCATED - sizeof JSON_TAIL };
    va_list ap;

    if (!l) {
        log_init(&fallback, CFG_LOG_INFO, CFG_LOG_TEXT);
        l = &fallback;
    }
    if (level > l->level)
        return;
    va_start(ap, fmt);
    char raw[LOG_MSG_MAX];
    int n = vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(raw, sizeof raw, "(unprintable message: %s)", fmt);
    log_redact(raw, msg, sizeof msg);
    format_timestamp(ts, sizeof ts);
    area = area ? area : "edgecache";

    bool json = l->format == CFG_LOG_JSON;
    put_str(&line, json ? "{\"ts\":\"" : "");
    put_str(&line, ts);
    put_str(&line, json ? "\",\"level\":\"" : " ");
    put_str(&line, level_name(level));
    put_str(&line, json ? "\",\"area\":\"" : " ");
    if (json)
        put_json_escaped(&line, area);
    else
        put_text_escaped(&line, area);
    put_str(&line, json ? "\",\"msg\":\"" : ": ");
    if (json)
        put_json_escaped(&line, msg);
    else
        put_text_escaped(&line, msg);
    if (n >= (int)sizeof msg)
        line.truncated = true;
    finish(&line, json ? JSON_TAIL : "\n");
    write_line(l->fd, &line);
}
