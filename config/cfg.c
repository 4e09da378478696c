/*
 * cfg.c — the option table and everything it drives: built-in defaults, the
 * INI file, the EDGECACHE_* environment, the command line, --help, the
 * Markdown reference and the example configuration file.
 *
 * Data model. Every option is one row of options[]: its name, type, default,
 * range, unit, text and the offset of its field in struct cfg. The type (one
 * row of types[]) knows how to parse a value into that field, how to release
 * the field, how to print a range and which placeholder to show. Nothing
 * outside the two tables knows about a particular option, except the
 * cross-option checks in check_cfg().
 *
 * cfg_load() builds a private struct cfg level by level (defaults, file,
 * environment, command line) and copies it out only when every level and the
 * cross-option checks passed: the caller sees a complete configuration or an
 * empty one, never a mix.
 *
 * Lists remember the level that last set them. A value from the same level
 * appends (repeated `allow =` lines or continuation lines in the file,
 * repeated --allow flags); a value from a higher level first empties the
 * list, so the environment's list replaces the file's and the command line's
 * replaces both. An empty value at a higher level therefore clears the list.
 *
 * Errors: the parse functions write a reason that quotes the value
 * ("'0' is out of range (1s..1h)"); the function that read the value prefixes
 * where it came from and the key, and writes the one message the caller gets.
 */
#include "config/cfg.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <ini.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "version.h"

#define ENV_PREFIX "EDGECACHE_"
#define ENV_CONFIG "EDGECACHE_CONFIG"
#define REASON_MAX 512
#define NAME_MAX_LEN 64         /* longest option name, flag or variable */
#define NODE_ID_MAX 64

/* Where a value came from; a higher level overrides a lower one. */
enum cfg_level { LEVEL_UNSET, LEVEL_DEFAULT, LEVEL_FILE, LEVEL_ENV, LEVEL_ARGV };

enum cfg_type_id {
    T_LISTEN,       /* struct cfg_listen */
    T_STRING,       /* char *, any text */
    T_NAME,         /* char *, 1..64 of [A-Za-z0-9._-] */
    T_PATH,         /* char *, not empty */
    T_ALLOW,        /* struct cfg_allow *, count at count_offset */
    T_ROUTE,        /* struct cfg_route *, count at count_offset */
    T_REFRESH,      /* struct cfg_refresh *, count at count_offset */
    T_DURATION,     /* uint64_t milliseconds */
    T_UINT,         /* uint64_t */
    T_SIZE,         /* uint64_t bytes */
    T_BUDGET,       /* char *: a size, or a share of the disk "80%" */
    T_BOOL,         /* bool */
    T_ENUM,         /* an enum (int-sized), index into choices */
};

struct cfg_option;

typedef int (*cfg_set_fn)(struct cfg *c, const struct cfg_option *o,
                          const char *value, char *why, size_t whylen);
typedef void (*cfg_clear_fn)(struct cfg *c, const struct cfg_option *o);
typedef void (*cfg_format_fn)(uint64_t v, char *buf, size_t len);

struct cfg_type {
    const char *metavar;        /* placeholder in --help and the reference */
    cfg_set_fn set;             /* parse value into the field (lists: append) */
    cfg_clear_fn clear;         /* release the field; NULL: owns nothing */
    cfg_format_fn format;       /* prints min and max; NULL: no range */
    bool is_list;
    bool is_switch;             /* --name alone means true */
};

struct cfg_option {
    const char *name;
    enum cfg_type_id type;
    const char *def;            /* default, parsed like any other value */
    void (*def_fn)(char *buf, size_t len);  /* computes the default instead */
    const char *def_doc;        /* shown for the default when def_fn is set */
    uint64_t min, max;          /* accepted range of numeric types */
    const char *unit;           /* shown after the range, or NULL */
    const char *metavar;        /* NULL: the type's placeholder */
    const char *const *choices; /* T_ENUM: names in enum order, NULL-ended */
    const char *help;
    size_t offset;              /* the field in struct cfg */
    size_t count_offset;        /* lists: the size_t element count */
};

/* Command-line arguments that are not options of the table. */
enum arg_kind { ARG_OPTION, ARG_CONFIG, ARG_HELP, ARG_VERSION, ARG_MARKDOWN, ARG_EXAMPLE };

struct cfg_special {
    const char *short_flag;     /* or NULL */
    const char *long_flag;
    enum arg_kind kind;
    const char *metavar;        /* NULL: takes no value */
    const char *help;
};

/* One command-line argument, as next_arg() recognised it. */
struct arg {
    enum arg_kind kind;
    const struct cfg_option *opt;   /* ARG_OPTION */
    const char *value;              /* ARG_OPTION, ARG_CONFIG */
    const char *flag;               /* the flag as typed, up to any '=' */
    int flag_len;
};

/* Field access */
static void *field(struct cfg *c, const struct cfg_option *o);
static size_t *count_field(struct cfg *c, const struct cfg_option *o);

/* Types: parse into a field */
static int set_listen(struct cfg *c, const struct cfg_option *o, const char *v, char *why, size_t n);
static int set_string(struct cfg *c, const struct cfg_option *o, const char *v, char *why, size_t n);
static int set_name(struct cfg *c, const struct cfg_option *o, const char *v, char *why, size_t n);
static int set_path(struct cfg *c, const struct cfg_option *o, const char *v, char *why, size_t n);
static int set_allow(struct cfg *c, const struct cfg_option *o, const char *v, char *why, size_t n);
static int set_route(struct cfg *c, const struct cfg_option *o, const char *v, char *why, size_t n);
static int set_refresh(struct cfg *c, const struct cfg_option *o, const char *v, char *why, size_t n);
static int set_duration(struct cfg *c, const struct cfg_option *o, const char *v, char *why, size_t n);
static int set_uint(struct cfg *c, const struct cfg_option *o, const char *v, char *why, size_t n);
static int set_size(struct cfg *c, const struct cfg_option *o, const char *v, char *why, size_t n);
static int set_budget(struct cfg *c, const struct cfg_option *o, const char *v, char *why, size_t n);
static int set_bool(struct cfg *c, const struct cfg_option *o, const char *v, char *why, size_t n);
static int set_enum(struct cfg *c, const struct cfg_option *o, const char *v, char *why, size_t n);
static void clear_string(struct cfg *c, const struct cfg_option *o);
static void clear_allow(struct cfg *c, const struct cfg_option *o);
static void clear_route(struct cfg *c, const struct cfg_option *o);
static void clear_refresh(struct cfg *c, const struct cfg_option *o);
static void format_duration(uint64_t ms, char *buf, size_t len);
static void format_uint(uint64_t v, char *buf, size_t len);
static void format_size(uint64_t v, char *buf, size_t len);
static void default_node_id(char *buf, size_t len);

/* Parsing pieces */
static int errorf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int parse_u64(const char *s, const char **end, uint64_t *out);
static int parse_port(const char *s, unsigned *out);
static bool valid_ipv4(const char *s, size_t n);
static bool valid_ipv6(const char *s, size_t n);
static bool valid_hostname(const char *s, size_t n);
static bool valid_host(const char *s, size_t n);
static int check_range(const struct cfg_option *o, const char *v, uint64_t x, char *why, size_t n);
static int parse_route(const char *s, struct cfg_route *out, char *why, size_t n);
static bool valid_route_url(const char *url);
static int for_each_entry(struct cfg *c, const struct cfg_option *o, const char *value,
                          int (*add)(struct cfg *, const struct cfg_option *, const char *, char *, size_t),
                          char *why, size_t n);

/* Lookup and naming */
static const struct cfg_option *option_by_name(const char *name);
static const struct cfg_option *option_by_flag(const char *flag, size_t len);
static const struct cfg_option *closest_option(const char *name);
static void option_flag(const struct cfg_option *o, char *buf, size_t len);
static void option_env(const struct cfg_option *o, char *buf, size_t len);
static const char *option_metavar(const struct cfg_option *o);

/* Loading */
struct load;
static int apply(struct load *ld, const struct cfg_option *o, const char *value,
                 enum cfg_level level, char *why, size_t n);
static int fail(struct load *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int apply_defaults(struct load *ld);
static int load_file(struct load *ld, const char *path);
static int load_env(struct load *ld, char **envp);
static enum cfg_result scan_argv(struct load *ld, int argc, char **argv, FILE *out,
                                 const char **config);
static int apply_argv(struct load *ld, int argc, char **argv);
static int check_cfg(struct load *ld);

/* Documentation */
static void describe(const struct cfg_option *o, bool markdown, char *buf, size_t len);
static const char *default_text(const struct cfg_option *o);

static const struct cfg_type types[] = {
    [T_LISTEN]   = { "HOST:PORT", set_listen, NULL, NULL, false, false },
    [T_STRING]   = { "TEXT", set_string, clear_string, NULL, false, false },
    [T_NAME]     = { "NAME", set_name, clear_string, NULL, false, false },
    [T_PATH]     = { "PATH", set_path, clear_string, NULL, false, false },
    [T_ALLOW]    = { "URL", set_allow, clear_allow, NULL, true, false },
    [T_ROUTE]    = { "PREFIX=URL", set_route, clear_route, NULL, true, false },
    [T_REFRESH]  = { "PATTERN=POLICY", set_refresh, clear_refresh, NULL, true, false },
    [T_DURATION] = { "DURATION", set_duration, NULL, format_duration, false, false },
    [T_UINT]     = { "N", set_uint, NULL, format_uint, false, false },
    [T_SIZE]     = { "SIZE", set_size, NULL, format_size, false, false },
    [T_BUDGET]   = { "SIZE|N%", set_budget, clear_string, NULL, false, false },
    [T_BOOL]     = { "BOOL", set_bool, NULL, NULL, false, true },
    [T_ENUM]     = { "WORD", set_enum, NULL, NULL, false, false },
};

static const char *const log_levels[] = { "error", "warn", "info", "debug", NULL };
static const char *const log_formats[] = { "text", "json", NULL };

#define SECOND_MS UINT64_C(1000)
#define MINUTE_MS (60 * SECOND_MS)
#define HOUR_MS (60 * MINUTE_MS)

/* The options, in the order --help, the reference and the example list them. */
static const struct cfg_option options[] = {
    { .name = "listen", .type = T_LISTEN, .def = "0.0.0.0:8080",
      .help = "data-plane listener, for devices (IPv6 as [::]:8080)",
      .offset = offsetof(struct cfg, listen) },
    { .name = "admin_listen", .type = T_LISTEN, .def = "127.0.0.1:8081",
      .help = "control-plane listener: /status, /metrics, /api/v1",
      .offset = offsetof(struct cfg, admin_listen) },
    { .name = "admin_token", .type = T_STRING, .def = "", .metavar = "TOKEN",
      .help = "bearer token for the control plane; required when admin_listen "
              "is not a loopback address",
      .offset = offsetof(struct cfg, admin_token) },
    { .name = "admin_token_file", .type = T_STRING, .def = "", .metavar = "PATH",
      .help = "a file holding the control plane's bearer token (a container secret); "
              "instead of admin_token",
      .offset = offsetof(struct cfg, admin_token_file) },
    { .name = "metrics_public", .type = T_BOOL, .def = "false",
      .help = "serve GET /metrics without the token (for a metrics collector that cannot send "
              "one); every other call still needs it",
      .offset = offsetof(struct cfg, metrics_public) },
    { .name = "cache_dir", .type = T_PATH, .def = "./edgecache-data", .metavar = "DIR",
      .help = "directory for blobs, temp files and the index",
      .offset = offsetof(struct cfg, cache_dir) },
    { .name = "allow", .type = T_ALLOW,
      .def = "http://*.dl.adu.microsoft.com, https://*.blob.core.windows.net",
      .help = "origins that may be fetched, as SCHEME://HOST[:PORT]; a leading *. "
              "matches any subdomain; without a port only the scheme's default",
      .offset = offsetof(struct cfg, allow),
      .count_offset = offsetof(struct cfg, n_allow) },
    { .name = "cache_size", .type = T_BUDGET, .def = "80%",
      .help = "the store's budget: bytes (500M, 20G) or a share of the cache_dir's file "
              "system; above it the least recently used unpinned blobs are evicted down to "
              "90% of it",
      .offset = offsetof(struct cfg, cache_size) },
    { .name = "immutable", .type = T_ALLOW,
      .def = "http://*.dl.adu.microsoft.com, https://*.blob.core.windows.net",
      .help = "origins (as in allow) whose content never changes under a URL: stored and "
              "served without revalidation whatever their freshness headers say "
              "(no-store and private still hold)",
      .offset = offsetof(struct cfg, immutable),
      .count_offset = offsetof(struct cfg, n_immutable) },
    { .name = "heuristic_max_age", .type = T_DURATION, .def = "60s", .metavar = "DURATION",
      .min = 0, .max = 86400000ull,
      .help = "content with neither max-age nor Expires is fresh for 10% of its age since "
              "Last-Modified, at most this long (0: always revalidated)",
      .offset = offsetof(struct cfg, heuristic_max_age_ms) },
    { .name = "refresh", .type = T_REFRESH,
      .def = "*.deb=immutable *.udeb=immutable *.rpm=immutable *.ipk=immutable "
             "*.apk=immutable *.swu=immutable *.raucb=immutable *.mender=immutable "
             "*/by-hash/*=immutable InRelease=revalidate Release=revalidate "
             "Release.gpg=revalidate Packages*=revalidate Sources*=revalidate "
             "Translation-*=revalidate Contents-*=revalidate APKINDEX.*=revalidate "
             "repomd.xml=revalidate",
      .help = "freshness rules by path, first match wins: PATTERN=immutable (never "
              "revalidated), PATTERN=revalidate (before every use) or PATTERN=MIN..MAX (the "
              "lifetime when the origin gives none, e.g. *.json=1m..1h); a pattern without "
              "'/' matches the file name, one with '/' the whole path",
      .offset = offsetof(struct cfg, refresh),
      .count_offset = offsetof(struct cfg, n_refresh) },
    { .name = "max_redirects", .type = T_UINT, .def = "5",
      .min = 0, .max = 20, .unit = "redirects",
      .help = "redirects (301, 302, 303, 307, 308) a fill follows upstream, each hop checked "
              "against allow; the final body is stored under the key asked for (0: redirects "
              "are passed on to the client)",
      .offset = offsetof(struct cfg, max_redirects) },
    { .name = "stale_if_error", .type = T_DURATION, .def = "7d", .metavar = "DURATION",
      .min = 0, .max = 31536000000ull,
      .help = "how long past its freshness stored content is still served when the "
              "upstream fails (a response's own stale-if-error may shorten it)",
      .offset = offsetof(struct cfg, stale_if_error_ms) },
    { .name = "route", .type = T_ROUTE, .def = "",
      .help = "path prefixes served from an origin base URL, "
              "e.g. /debian/=http://deb.debian.org/debian/",
      .offset = offsetof(struct cfg, routes),
      .count_offset = offsetof(struct cfg, n_routes) },
    { .name = "node_id", .type = T_NAME, .def_fn = default_node_id,
      .def_doc = "the host name",
      .help = "this node's name, shown in /status "
              "(letters, digits, '.', '-', '_')",
      .offset = offsetof(struct cfg, node_id) },
    { .name = "connect_timeout", .type = T_DURATION, .def = "10s",
      .min = 100, .max = 10 * MINUTE_MS,
      .help = "time allowed to connect to an upstream",
      .offset = offsetof(struct cfg, connect_timeout_ms) },
    { .name = "stall_timeout", .type = T_DURATION, .def = "30s",
      .min = SECOND_MS, .max = HOUR_MS,
      .help = "an upstream that sends no byte for this long fails the fill",
      .offset = offsetof(struct cfg, stall_timeout_ms) },
    { .name = "peers", .type = T_STRING, .def = "", .metavar = "URL[,URL...]",
      .help = "the nodes of this layer, this one among them, which act as one cache: "
              "http://HOST:PORT (a peer's data plane), dns://NAME:PORT (every address NAME "
              "resolves to, again every 10 s: a Kubernetes headless Service) or "
              "dns+srv://NAME (its SRV records' targets and ports); each key is "
              "owned by one live peer (rendezvous hashing), which alone fills and stores it, "
              "the others ask it; their control planes are reached on this node's "
              "admin_listen port with its admin_token; empty: no peers",
      .offset = offsetof(struct cfg, peers) },
    { .name = "peer_replicas", .type = T_UINT, .def = "1", .min = 1, .max = 16,
      .unit = "copies",
      .help = "how many peers keep a prefetched (pinned) payload: its owner and the next-ranked "
              "ones",
      .offset = offsetof(struct cfg, peer_replicas) },
    { .name = "parent", .type = T_STRING, .def = "", .metavar = "URL",
      .help = "the parent edgecache (http://host:port): every miss is fetched from it in "
              "Delivery Optimization shape instead of from the origin",
      .offset = offsetof(struct cfg, parent) },
    { .name = "parent_fallback_to_origin", .type = T_BOOL, .def = "false",
      .help = "when the parent fails, fetch from the origin (only where this layer can reach it)",
      .offset = offsetof(struct cfg, parent_fallback_to_origin) },
    { .name = "parent_admin_url", .type = T_STRING, .def = "", .metavar = "URL",
      .help = "the parent's control plane (http://host:port): manifests accepted here are "
              "handed to it too, so it registers, prefetches and pins them",
      .offset = offsetof(struct cfg, parent_admin_url) },
    { .name = "parent_admin_token", .type = T_STRING, .def = "", .metavar = "TOKEN",
      .help = "bearer token for parent_admin_url",
      .offset = offsetof(struct cfg, parent_admin_token) },
    { .name = "advertise_url", .type = T_STRING, .def = "", .metavar = "URL",
      .help = "the URL children use to reach this cache's data plane, put into rewritten "
              "manifests (default: the host name the rewrite request came to, with the data "
              "plane's port)",
      .offset = offsetof(struct cfg, advertise_url) },
    { .name = "resume_attempts", .type = T_UINT, .def = "5",
      .min = 0, .max = 100, .unit = "attempts",
      .help = "times a fill whose upstream broke off mid-body resumes (Range + If-Range) before it fails",
      .offset = offsetof(struct cfg, resume_attempts) },
    { .name = "require_verified", .type = T_BOOL, .def = "false",
      .help = "refuse (502) and never store content that has no expected digest: no registered "
              "expectation and no digest header from the upstream",
      .offset = offsetof(struct cfg, require_verified) },
    { .name = "prefetch_concurrency", .type = T_UINT, .def = "4",
      .min = 1, .max = 64, .unit = "files",
      .help = "files of prefetched deployments fetched at once",
      .offset = offsetof(struct cfg, prefetch_concurrency) },
    { .name = "manifest_max_bytes", .type = T_SIZE, .def = "4M",
      .min = 1024, .max = 64ull << 20, .unit = "bytes",
      .help = "largest body the control plane accepts (manifests, expectation lists)",
      .offset = offsetof(struct cfg, manifest_max_bytes) },
    { .name = "workers", .type = T_UINT, .def = "0",
      .min = 0, .max = 256, .unit = "event loops",
      .help = "event loops serving the data plane, each on its own thread with its own "
              "listener on the data plane's port (SO_REUSEPORT); fills, upstream transfers "
              "and the control plane stay on the main loop, and every worker shares one "
              "store, catalog and fill table (one upstream transfer per key); 0: one per CPU "
              "this process may run on",
      .offset = offsetof(struct cfg, workers) },
    { .name = "max_connections", .type = T_UINT, .def = "1024",
      .min = 1, .max = 100000, .unit = "connections",
      .help = "data-plane connections at once; past it a new connection is answered 503 "
              "with Retry-After",
      .offset = offsetof(struct cfg, max_connections) },
    { .name = "client_timeout", .type = T_DURATION, .def = "60s",
      .min = SECOND_MS, .max = HOUR_MS,
      .help = "a client connection that sends nothing, or reads nothing of its answer, for "
              "this long is dropped",
      .offset = offsetof(struct cfg, client_timeout_ms) },
    { .name = "header_timeout", .type = T_DURATION, .def = "10s",
      .min = SECOND_MS, .max = 10 * MINUTE_MS,
      .help = "a request's line and header fields must arrive within this, however slowly "
              "they trickle in (slowloris)",
      .offset = offsetof(struct cfg, header_timeout_ms) },
    { .name = "shutdown_grace", .type = T_DURATION, .def = "10s",
      .min = 0, .max = 10 * MINUTE_MS,
      .help = "on SIGTERM, how long answers in progress may finish before fills are abandoned "
              "and connections closed",
      .offset = offsetof(struct cfg, shutdown_grace_ms) },
    { .name = "log_level", .type = T_ENUM, .def = "info", .metavar = "LEVEL",
      .choices = log_levels,
      .help = "least severe level logged",
      .offset = offsetof(struct cfg, log_level) },
    { .name = "log_format", .type = T_ENUM, .def = "text", .metavar = "FORMAT",
      .choices = log_formats,
      .help = "text, or json for one object per line",
      .offset = offsetof(struct cfg, log_format) },
};

#define N_OPTIONS (sizeof options / sizeof options[0])

static const struct cfg_special specials[] = {
    { "-c", "--config", ARG_CONFIG, "FILE",
      "read options from FILE (INI: `name = value` lines; also EDGECACHE_CONFIG)" },
    { "-h", "--help", ARG_HELP, NULL, "print this help and exit" },
    { "-V", "--version", ARG_VERSION, NULL, "print the version and exit" },
    { NULL, "--help-markdown", ARG_MARKDOWN, NULL,
      "print the option reference as a Markdown table and exit" },
    { NULL, "--help-config", ARG_EXAMPLE, NULL,
      "print an example configuration file and exit" },
};

#define N_SPECIALS (sizeof specials / sizeof specials[0])

/* The state of one cfg_load() call. */
struct load {
    struct cfg cfg;                     /* being built; owned until copied out */
    enum cfg_level set_at[N_OPTIONS];   /* level that last set each option */
    char **envp;
    char *err;                          /* the caller's message buffer */
    size_t errlen;
};

/* ---- small helpers ---------------------------------------------------- */

static int errorf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static void *field(struct cfg *c, const struct cfg_option *o)
{
    return (char *)c + o->offset;
}

static size_t *count_field(struct cfg *c, const struct cfg_option *o)
{
    return (size_t *)(void *)((char *)c + o->count_offset);
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static char lower(char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
}

/* Decimal digits only (no sign, no space). -1: no digits, -2: too large. */
static int parse_u64(const char *s, const char **end, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = s;
    for (; is_digit(*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -2;
        v = v * 10 + d;
    }
    if (p == s)
        return -1;
    *end = p;
    *out = v;
    return 0;
}

static int parse_port(const char *s, unsigned *out)
{
    const char *end;
    uint64_t v;
    if (parse_u64(s, &end, &v) != 0 || *end != '\0' || v < 1 || v > 65535)
        return -1;
    *out = (unsigned)v;
    return 0;
}

/* ---- parse helpers (public) ------------------------------------------- */

int cfg_parse_size(const char *s, uint64_t *out, char *err, size_t errlen)
{
    static const char suffixes[] = "kmgt";
    const char *rest;
    uint64_t n;
    int rc = parse_u64(s, &rest, &n);
    if (rc == -2)
        return errorf(err, errlen, "'%s' is too large", s);
    if (rc != 0)
        return errorf(err, errlen, "'%s' is not a size (use e.g. 4096, 500M, 20G)", s);
    unsigned shift = 0;
    const char *unit = *rest ? strchr(suffixes, lower(*rest)) : NULL;
    if (unit) {
        shift = 10 * (unsigned)(unit - suffixes + 1);
        rest++;
    }
    bool ok_tail = *rest == '\0' || strcasecmp(rest, "b") == 0 ||
                   (shift && strcasecmp(rest, "ib") == 0);
    if (!ok_tail)
        return errorf(err, errlen, "'%s' is not a size (use e.g. 4096, 500M, 20G)", s);
    if (shift && n > (UINT64_MAX >> shift))
        return errorf(err, errlen, "'%s' is too large", s);
    *out = n << shift;
    return 0;
}

int cfg_parse_duration_ms(const char *s, uint64_t *out, char *err, size_t errlen)
{
    static const struct { const char *suffix; uint64_t ms; } units[] = {
        { "", SECOND_MS }, { "ms", 1 }, { "s", SECOND_MS },
        { "m", MINUTE_MS }, { "h", HOUR_MS }, { "d", 24 * HOUR_MS },
    };
    const char *rest;
    uint64_t n;
    int rc = parse_u64(s, &rest, &n);
    if (rc == -2)
        return errorf(err, errlen, "'%s' is too large", s);
    for (size_t i = 0; rc == 0 && i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(rest, units[i].suffix) != 0)
            continue;
        if (n > UINT64_MAX / units[i].ms)
            return errorf(err, errlen, "'%s' is too large", s);
        *out = n * units[i].ms;
        return 0;
    }
    return errorf(err, errlen,
                  "'%s' is not a duration (use e.g. 500ms, 10s, 2m, 1h, 7d; "
                  "a bare number is seconds)", s);
}

static bool valid_ipv4(const char *s, size_t n)
{
    char buf[INET_ADDRSTRLEN];
    struct in_addr a;
    if (n >= sizeof buf)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return inet_pton(AF_INET, buf, &a) == 1;
}

static bool valid_ipv6(const char *s, size_t n)
{
    char buf[INET6_ADDRSTRLEN];
    struct in6_addr a;
    if (n >= sizeof buf)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return inet_pton(AF_INET6, buf, &a) == 1;
}

/* Labels of letters, digits, '-' and '_', separated by single dots. */
static bool valid_hostname(const char *s, size_t n)
{
    size_t label = 0;
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        bool ok = is_digit(ch) || (lower(ch) >= 'a' && lower(ch) <= 'z') ||
                  ch == '-' || ch == '_';
        if (!ok || ++label > 63)
            return false;
    }
    return label > 0;
}

/* A host name, or an IPv4 address when it has only digits and dots. */
static bool valid_host(const char *s, size_t n)
{
    if (strspn(s, "0123456789.") >= n)
        return valid_ipv4(s, n);
    return valid_hostname(s, n);
}

int cfg_parse_listen(const char *s, struct cfg_listen *out, char *err, size_t errlen)
{
    const char *host = s, *port;
    size_t hostlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return errorf(err, errlen, "'%s' is not [IPV6]:PORT (e.g. [::]:8080)", s);
        host = s + 1;
        hostlen = (size_t)(close - host);
        port = close + 2;
        if (!valid_ipv6(host, hostlen))
            return errorf(err, errlen, "'%s': '%.*s' is not an IPv6 address", s,
                          (int)hostlen, host);
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon)
            return errorf(err, errlen, "'%s' is not HOST:PORT (e.g. 0.0.0.0:8080 or [::]:8080)", s);
        hostlen = (size_t)(colon - s);
        port = colon + 1;
        if (memchr(s, ':', hostlen))
            return errorf(err, errlen, "'%s': an IPv6 address needs brackets, e.g. [::1]:8080", s);
        if (hostlen == 0) {
            host = "0.0.0.0";
            hostlen = strlen(host);
        } else if (!valid_host(host, hostlen)) {
            return errorf(err, errlen, "'%s': '%.*s' is not a host name or address", s,
                          (int)hostlen, host);
        }
    }
    unsigned p;
    if (parse_port(port, &p) != 0)
        return errorf(err, errlen, "'%s': the port must be 1..65535", s);
    memcpy(out->host, host, hostlen);
    out->host[hostlen] = '\0';
    out->port = p;
    return 0;
}

/* HOSTPATTERN of an allow entry: [*.]host, or [IPV6]. Lower-cased into out. */
static int parse_allow_host(const char *entry, const char *h, size_t n,
                            struct cfg_allow *out, char *err, size_t errlen)
{
    bool wild = n >= 2 && h[0] == '*' && h[1] == '.';
    const char *name = wild ? h + 2 : h;
    size_t namelen = wild ? n - 2 : n;
    bool ok;
    if (namelen == 0)
        return errorf(err, errlen, "'%s': the host is empty", entry);
    if (!wild && h[0] == '[')
        ok = n > 2 && h[n - 1] == ']' && valid_ipv6(h + 1, n - 2);
    else
        ok = valid_host(name, namelen);
    if (!ok)
        return errorf(err, errlen, "'%s': '%.*s' is not a host name, *.domain or address",
                      entry, (int)n, h);
    for (size_t i = 0; i < n; i++)
        out->host[i] = lower(h[i]);
    out->host[n] = '\0';
    return 0;
}

int cfg_parse_allow(const char *s, struct cfg_allow *out, char *err, size_t errlen)
{
    const char *sep = strstr(s, "://");
    if (!sep)
        return errorf(err, errlen, "'%s' is not SCHEME://HOST[:PORT] "
                      "(e.g. https://*.blob.core.windows.net)", s);
    size_t schemelen = (size_t)(sep - s);
    bool https = schemelen == 5 && strncasecmp(s, "https", 5) == 0;
    if (!https && !(schemelen == 4 && strncasecmp(s, "http", 4) == 0))
        return errorf(err, errlen, "'%s': the scheme must be http or https", s);
    const char *h = sep + 3;
    size_t n = strcspn(h, "/?#@");
    if (h[n] == '@')
        return errorf(err, errlen, "'%s': user info (user@) is not allowed", s);
    if (h[n] != '\0' && strcmp(h + n, "/") != 0)
        return errorf(err, errlen, "'%s': an allow entry names a host, not a path "
                      "(use route for path prefixes)", s);
    const char *close = h[0] == '[' ? memchr(h, ']', n) : NULL;
    if (h[0] == '[' && !close)
        return errorf(err, errlen, "'%s': '%.*s' is not a host name, *.domain or address",
                      s, (int)n, h);
    const char *colon = memchr(close ? close : h, ':', n - (size_t)((close ? close : h) - h));
    size_t hostlen = colon ? (size_t)(colon - h) : n;
    if (hostlen >= sizeof out->host)
        return errorf(err, errlen, "'%s': the host is too long", s);
    unsigned port = https ? 443 : 80;
    if (colon) {
        char digits[8] = "";
        size_t plen = n - hostlen - 1;
        if (plen < sizeof digits)
            memcpy(digits, colon + 1, plen), digits[plen] = '\0';
        if (plen >= sizeof digits || parse_port(digits, &port) != 0)
            return errorf(err, errlen, "'%s': the port must be 1..65535", s);
    }
    if (parse_allow_host(s, h, hostlen, out, err, errlen) != 0)
        return -1;
    strcpy(out->scheme, https ? "https" : "http");
    out->port = port;
    return 0;
}

static bool valid_route_url(const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *query = NULL;
    bool ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_NO_QUERY &&
              (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0) &&
              host[0] != '\0' && url[strlen(url) - 1] == '/' && !strchr(url, '#');
    curl_free(scheme);
    curl_free(host);
    curl_free(query);
    curl_url_cleanup(u);
    return ok;
}

static int parse_route(const char *s, struct cfg_route *out, char *why, size_t n)
{
    const char *eq = strchr(s, '=');
    if (!eq)
        return errorf(why, n, "'%s' is not PREFIX=URL "
                      "(e.g. /debian/=http://deb.debian.org/debian/)", s);
    size_t plen = (size_t)(eq - s);
    if (plen == 0 || s[0] != '/' || s[plen - 1] != '/')
        return errorf(why, n, "'%s': the prefix must start and end with '/'", s);
    if (!valid_route_url(eq + 1))
        return errorf(why, n, "'%s': the URL must be http:// or https://, have a host "
                      "and no query, and end with '/'", s);
    out->prefix = strndup(s, plen);
    out->url = strdup(eq + 1);
    if (!out->prefix || !out->url) {
        free(out->prefix);
        free(out->url);
        return errorf(why, n, "out of memory");
    }
    return 0;
}

/* ---- types: setters --------------------------------------------------- */

static int check_range(const struct cfg_option *o, const char *v, uint64_t x,
                       char *why, size_t n)
{
    char lo[32], hi[32];
    if (x >= o->min && x <= o->max)
        return 0;
    types[o->type].format(o->min, lo, sizeof lo);
    types[o->type].format(o->max, hi, sizeof hi);
    return errorf(why, n, "'%s' is out of range (%s..%s%s%s)", v, lo, hi,
                  o->unit ? " " : "", o->unit ? o->unit : "");
}

static int set_listen(struct cfg *c, const struct cfg_option *o, const char *v,
                      char *why, size_t n)
{
    return cfg_parse_listen(v, field(c, o), why, n);
}

static int set_string(struct cfg *c, const struct cfg_option *o, const char *v,
                      char *why, size_t n)
{
    char **p = field(c, o);
    char *copy = strdup(v);
    if (!copy)
        return errorf(why, n, "out of memory");
    free(*p);
    *p = copy;
    return 0;
}

int cfg_parse_budget(const char *s, uint64_t *bytes, unsigned *percent, char *err,
                     size_t errlen)
{
    size_t len = strlen(s);
    *bytes = 0;
    *percent = 0;
    if (len && s[len - 1] == '%') {
        char digits[8];
        if (len - 1 == 0 || len - 1 >= sizeof digits
            || strspn(s, "0123456789") != len - 1)
            return errorf(err, errlen, "'%s' is not a share of the disk (1%%..100%%)", s);
        memcpy(digits, s, len - 1);
        digits[len - 1] = '\0';
        unsigned long p = strtoul(digits, NULL, 10);
        if (p < 1 || p > 100)
            return errorf(err, errlen, "'%s' is out of range (1%%..100%%)", s);
        *percent = (unsigned)p;
        return 0;
    }
    if (cfg_parse_size(s, bytes, err, errlen) != 0)
        return errorf(err, errlen, "'%s' is neither a size (500M, 20G) nor a share of the "
                      "disk (80%%)", s);
    if (*bytes < (1u << 20))
        return errorf(err, errlen, "'%s' is below the smallest budget, 1M", s);
    return 0;
}

static int set_budget(struct cfg *c, const struct cfg_option *o, const char *v,
                      char *why, size_t n)
{
    uint64_t bytes;
    unsigned percent;
    if (cfg_parse_budget(v, &bytes, &percent, why, n) != 0)
        return -1;
    return set_string(c, o, v, why, n);
}

static int set_name(struct cfg *c, const struct cfg_option *o, const char *v,
                    char *why, size_t n)
{
    size_t len = strlen(v);
    if (len == 0 || len > NODE_ID_MAX ||
        strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != len)
        return errorf(why, n, "'%s' is not a name (1..%d letters, digits, '.', '-', '_')",
                      v, NODE_ID_MAX);
    return set_string(c, o, v, why, n);
}

static int set_path(struct cfg *c, const struct cfg_option *o, const char *v,
                    char *why, size_t n)
{
    if (v[0] == '\0')
        return errorf(why, n, "the path must not be empty");
    return set_string(c, o, v, why, n);
}

static void clear_string(struct cfg *c, const struct cfg_option *o)
{
    char **p = field(c, o);
    free(*p);
    *p = NULL;
}

/* Calls add() for every entry of a list value (separated by commas and/or
 * white space). An empty value adds nothing. */
static int for_each_entry(struct cfg *c, const struct cfg_option *o, const char *value,
                          int (*add)(struct cfg *, const struct cfg_option *, const char *, char *, size_t),
                          char *why, size_t n)
{
    static const char seps[] = ", \t\r\n";
    const char *p = value + strspn(value, seps);
    while (*p) {
        size_t len = strcspn(p, seps);
        char *entry = strndup(p, len);
        if (!entry)
            return errorf(why, n, "out of memory");
        int rc = add(c, o, entry, why, n);
        free(entry);
        if (rc != 0)
            return -1;
        p += len;
        p += strspn(p, seps);
    }
    return 0;
}

static int add_allow(struct cfg *c, const struct cfg_option *o, const char *entry,
                     char *why, size_t n)
{
    struct cfg_allow a, **list = field(c, o);
    size_t *count = count_field(c, o);
    if (cfg_parse_allow(entry, &a, why, n) != 0)
        return -1;
    struct cfg_allow *grown = realloc(*list, (*count + 1) * sizeof *grown);
    if (!grown)
        return errorf(why, n, "out of memory");
    grown[(*count)++] = a;
    *list = grown;
    return 0;
}

static int add_route(struct cfg *c, const struct cfg_option *o, const char *entry,
                     char *why, size_t n)
{
    struct cfg_route r, **list = field(c, o);
    size_t *count = count_field(c, o);
    if (parse_route(entry, &r, why, n) != 0)
        return -1;
    struct cfg_route *grown = realloc(*list, (*count + 1) * sizeof *grown);
    if (!grown) {
        free(r.prefix);
        free(r.url);
        return errorf(why, n, "out of memory");
    }
    grown[(*count)++] = r;
    *list = grown;
    return 0;
}

static int parse_refresh(const char *s, struct cfg_refresh *out, char *why, size_t n)
{
    const char *eq = strrchr(s, '=');
    char buf[64];
    memset(out, 0, sizeof *out);
    if (!eq || eq == s || !eq[1])
        return errorf(why, n, "'%s' is not PATTERN=POLICY (e.g. *.deb=immutable, "
                      "InRelease=revalidate, *.json=1m..1h)", s);
    const char *policy = eq + 1;
    if (strcmp(policy, "immutable") == 0) {
        out->kind = CFG_REFRESH_IMMUTABLE;
    } else if (strcmp(policy, "revalidate") == 0) {
        out->kind = CFG_REFRESH_REVALIDATE;
    } else {
        const char *dots = strstr(policy, "..");
        size_t mlen = dots ? (size_t)(dots - policy) : 0;
        if (!dots || mlen == 0 || mlen >= sizeof buf || !dots[2])
            return errorf(why, n, "'%s': the policy must be immutable, revalidate or MIN..MAX "
                          "(durations, e.g. 1m..1h)", s);
        memcpy(buf, policy, mlen);
        buf[mlen] = '\0';
        char reason[REASON_MAX];
        if (cfg_parse_duration_ms(buf, &out->min_ms, reason, sizeof reason) != 0
            || cfg_parse_duration_ms(dots + 2, &out->max_ms, reason, sizeof reason) != 0)
            return errorf(why, n, "'%s': %s", s, reason);
        if (out->min_ms > out->max_ms)
            return errorf(why, n, "'%s': MIN is larger than MAX", s);
        out->kind = CFG_REFRESH_RANGE;
    }
    out->pattern = strndup(s, (size_t)(eq - s));
    return out->pattern ? 0 : errorf(why, n, "out of memory");
}

static int add_refresh(struct cfg *c, const struct cfg_option *o, const char *entry,
                       char *why, size_t n)
{
    struct cfg_refresh r, **list = field(c, o);
    size_t *count = count_field(c, o);
    if (parse_refresh(entry, &r, why, n) != 0)
        return -1;
    struct cfg_refresh *grown = realloc(*list, (*count + 1) * sizeof *grown);
    if (!grown) {
        free(r.pattern);
        return errorf(why, n, "out of memory");
    }
    grown[(*count)++] = r;
    *list = grown;
    return 0;
}

static int set_refresh(struct cfg *c, const struct cfg_option *o, const char *v,
                       char *why, size_t n)
{
    return for_each_entry(c, o, v, add_refresh, why, n);
}

static void clear_refresh(struct cfg *c, const struct cfg_option *o)
{
    struct cfg_refresh **list = field(c, o);
    size_t *count = count_field(c, o);
    for (size_t i = 0; i < *count; i++)
        free((*list)[i].pattern);
    free(*list);
    *list = NULL;
    *count = 0;
}

static int set_allow(struct cfg *c, const struct cfg_option *o, const char *v,
                     char *why, size_t n)
{
    return for_each_entry(c, o, v, add_allow, why, n);
}

static int set_route(struct cfg *c, const struct cfg_option *o, const char *v,
                     char *why, size_t n)
{
    return for_each_entry(c, o, v, add_route, why, n);
}

static void clear_allow(struct cfg *c, const struct cfg_option *o)
{
    struct cfg_allow **list = field(c, o);
    free(*list);
    *list = NULL;
    *count_field(c, o) = 0;
}

static void clear_route(struct cfg *c, const struct cfg_option *o)
{
    struct cfg_route **list = field(c, o);
    size_t *count = count_field(c, o);
    for (size_t i = 0; i < *count; i++) {
        free((*list)[i].prefix);
        free((*list)[i].url);
    }
    free(*list);
    *list = NULL;
    *count = 0;
}

static int set_duration(struct cfg *c, const struct cfg_option *o, const char *v,
                        char *why, size_t n)
{
    uint64_t ms;
    if (cfg_parse_duration_ms(v, &ms, why, n) != 0 || check_range(o, v, ms, why, n) != 0)
        return -1;
    *(uint64_t *)field(c, o) = ms;
    return 0;
}

static int set_uint(struct cfg *c, const struct cfg_option *o, const char *v,
                    char *why, size_t n)
{
    const char *end;
    uint64_t x;
    if (parse_u64(v, &end, &x) != 0 || *end != '\0')
        return errorf(why, n, "'%s' is not a whole number", v);
    if (check_range(o, v, x, why, n) != 0)
        return -1;
    *(uint64_t *)field(c, o) = x;
    return 0;
}

static int set_size(struct cfg *c, const struct cfg_option *o, const char *v,
                    char *why, size_t n)
{
    uint64_t bytes;
    if (cfg_parse_size(v, &bytes, why, n) != 0 || check_range(o, v, bytes, why, n) != 0)
        return -1;
    *(uint64_t *)field(c, o) = bytes;
    return 0;
}

static int set_bool(struct cfg *c, const struct cfg_option *o, const char *v,
                    char *why, size_t n)
{
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
            *(bool *)field(c, o) = strcasecmp(v, yes[i]) == 0;
            return 0;
        }
    }
    return errorf(why, n, "'%s' is not a boolean (true/false, yes/no, on/off, 1/0)", v);
}

_Static_assert(sizeof(enum cfg_log_level) == sizeof(int), "enum fields are int-sized");
_Static_assert(sizeof(enum cfg_log_format) == sizeof(int), "enum fields are int-sized");

static int set_enum(struct cfg *c, const struct cfg_option *o, const char *v,
                    char *why, size_t n)
{
    char names[128];
    for (int i = 0; o->choices[i]; i++) {
        if (strcasecmp(v, o->choices[i]) == 0) {
            memcpy(field(c, o), &i, sizeof i);
            return 0;
        }
    }
    describe(o, false, names, sizeof names);
    return errorf(why, n, "'%s' is not %s", v, names);
}

/* ---- types: formatting ------------------------------------------------ */

static void format_duration(uint64_t ms, char *buf, size_t len)
{
    if (ms && ms % (24 * HOUR_MS) == 0)
        snprintf(buf, len, "%" PRIu64 "d", ms / (24 * HOUR_MS));
    else if (ms && ms % HOUR_MS == 0)
        snprintf(buf, len, "%" PRIu64 "h", ms / HOUR_MS);
    else if (ms && ms % MINUTE_MS == 0)
        snprintf(buf, len, "%" PRIu64 "m", ms / MINUTE_MS);
    else if (ms % SECOND_MS == 0)
        snprintf(buf, len, "%" PRIu64 "s", ms / SECOND_MS);
    else
        snprintf(buf, len, "%" PRIu64 "ms", ms);
}

static void format_uint(uint64_t v, char *buf, size_t len)
{
    snprintf(buf, len, "%" PRIu64, v);
}

static void format_size(uint64_t v, char *buf, size_t len)
{
    static const char units[] = "TGMK";
    for (int i = 0; v && units[i]; i++) {
        unsigned shift = 10 * (unsigned)(4 - i);
        if ((v & ((1ull << shift) - 1)) == 0) {
            snprintf(buf, len, "%" PRIu64 "%c", v >> shift, units[i]);
            return;
        }
    }
    format_uint(v, buf, len);
}

static void default_node_id(char *buf, size_t len)
{
    if (gethostname(buf, len) != 0 || buf[0] == '\0')
        snprintf(buf, len, "edgecache");
    buf[len - 1] = '\0';
}

/* ---- lookup and naming ------------------------------------------------ */

static const struct cfg_option *option_by_name(const char *name)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strcmp(options[i].name, name) == 0)
            return &options[i];
    return NULL;
}

/* "--cache-dir" (len bytes, not terminated) names cache_dir. */
static const struct cfg_option *option_by_flag(const char *flag, size_t len)
{
    char buf[NAME_MAX_LEN];
    for (size_t i = 0; i < N_OPTIONS; i++) {
        option_flag(&options[i], buf, sizeof buf);
        if (strlen(buf) == len && strncmp(buf, flag, len) == 0)
            return &options[i];
    }
    return NULL;
}

static void option_flag(const struct cfg_option *o, char *buf, size_t len)
{
    size_t i = 0;
    snprintf(buf, len, "--%s", o->name);
    for (; buf[i]; i++)
        if (buf[i] == '_')
            buf[i] = '-';
}

static void option_env(const struct cfg_option *o, char *buf, size_t len)
{
    size_t i = strlen(ENV_PREFIX);
    snprintf(buf, len, ENV_PREFIX "%s", o->name);
    for (; buf[i]; i++)
        if (buf[i] >= 'a' && buf[i] <= 'z')
            buf[i] = (char)(buf[i] - 'a' + 'A');
}

static const char *option_metavar(const struct cfg_option *o)
{
    return o->metavar ? o->metavar : types[o->type].metavar;
}

/* Levenshtein distance, for "did you mean"; long names compare as far. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[NAME_MAX_LEN + 1];
    if (la > NAME_MAX_LEN || lb > NAME_MAX_LEN)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (lower(a[i - 1]) != lower(b[j - 1]));
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The option whose key is within two edits of name (as a key, with '_'). */
static const struct cfg_option *closest_option(const char *name)
{
    const struct cfg_option *best = NULL;
    size_t best_d = 3;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        size_t d = edit_distance(name, options[i].name);
        if (d < best_d) {
            best_d = d;
            best = &options[i];
        }
    }
    return best;
}

/* ---- loading ---------------------------------------------------------- */

static int fail(struct load *ld, const char *fmt, ...)
{
    if (ld->err && ld->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ld->err, ld->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int apply(struct load *ld, const struct cfg_option *o, const char *value,
                 enum cfg_level level, char *why, size_t n)
{
    size_t i = (size_t)(o - options);
    const struct cfg_type *t = &types[o->type];
    if (t->is_list && ld->set_at[i] < level)
        t->clear(&ld->cfg, o);
    ld->set_at[i] = level;
    return t->set(&ld->cfg, o, value, why, n);
}

static int apply_defaults(struct load *ld)
{
    char why[REASON_MAX], computed[256];
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct cfg_option *o = &options[i];
        const char *value = o->def ? o->def : "";
        if (o->def_fn) {
            o->def_fn(computed, sizeof computed);
            value = computed;
        }
        if (apply(ld, o, value, LEVEL_DEFAULT, why, sizeof why) != 0)
            return fail(ld, "built-in default of %s: %s", o->name, why);
    }
    return 0;
}

/* The INI file. inih counts lines once per reader call; the reader below
 * counts the same way, so the handler knows the line it is called for. It
 * also checks section headers (inih reports them to no one) and refuses a
 * line too long for inih's buffer instead of letting inih split it. */
struct ini_ctx {
    struct load *ld;
    const char *path;
    FILE *f;
    int line;           /* the line last read */
    int err_line;       /* line of the first error recorded, 0: none */
};

static void ini_error(struct ini_ctx *x, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void ini_error(struct ini_ctx *x, const char *fmt, ...)
{
    char why[REASON_MAX];
    va_list ap;
    if (x->err_line)
        return;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    x->err_line = x->line;
    fail(x->ld, "%s:%d: %s", x->path, x->line, why);
}

static bool section_ok(const char *name)
{
    return name[0] == '\0' || strcmp(name, "edgecache") == 0;
}

static void check_section_line(struct ini_ctx *x, const char *line)
{
    char name[64];
    const char *close = strchr(line, ']');
    if (line[0] != '[' || !close)
        return;
    size_t n = (size_t)(close - line - 1);
    if (n >= sizeof name)
        n = sizeof name - 1;
    memcpy(name, line + 1, n);
    name[n] = '\0';
    if (!section_ok(name))
        ini_error(x, "unknown section [%s] (put keys at the top or under [edgecache])", name);
}

/* One physical line into str (num bytes, inih's buffer), read byte by byte
 * rather than with fgets(), whose result strlen() cannot measure: a NUL
 * byte would hide how much was read, so a long line would be split and
 * its rest read as a line of its own. A line with a NUL byte is refused
 * (a config file is text), and so is one longer than the buffer. */
static char *ini_read_line(char *str, int num, void *stream)
{
    struct ini_ctx *x = stream;
    size_t len = 0, cap = num > 0 ? (size_t)num - 1 : 0;
    bool nul = false, eof = false;
    if (x->err_line)
        return NULL;
    for (;;) {
        int c = getc(x->f);
        if (c == EOF) {
            eof = true;
            break;
        }
        nul |= c == '\0';
        if (len < cap)
            str[len] = (char)c;
        len++;
        if (c == '\n')
            break;
    }
    if (len == 0 && eof)
        return NULL;
    x->line++;
    if (nul) {
        ini_error(x, "the line contains a NUL byte (a config file is text)");
        return NULL;
    }
    if (len > cap) {
        ini_error(x, "the line is longer than %d characters "
                  "(split a list over several `name = ...` lines)", num - 3);
        return NULL;
    }
    str[len] = '\0';
    check_section_line(x, str);
    return x->err_line ? NULL : str;
}

static int ini_on_pair(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *x = user;
    char why[REASON_MAX], *unquoted = NULL;
    if (!section_ok(section)) {
        ini_error(x, "unknown section [%s] (put keys at the top or under [edgecache])", section);
        return 0;
    }
    const struct cfg_option *o = option_by_name(name);
    if (!o) {
        const struct cfg_option *near = closest_option(name);
        ini_error(x, "unknown key '%s'%s%s%s", name, near ? " (did you mean " : "",
                  near ? near->name : "", near ? "?)" : "");
        return 0;
    }
    size_t len = strlen(value);
    if (len >= 2 && value[0] == '"' && value[len - 1] == '"') {
        unquoted = strndup(value + 1, len - 2);
        if (!unquoted) {
            ini_error(x, "out of memory");
            return 0;
        }
        value = unquoted;
    }
    int rc = apply(x->ld, o, value, LEVEL_FILE, why, sizeof why);
    free(unquoted);
    if (rc != 0)
        ini_error(x, "%s: %s", o->name, why);
    return rc == 0;
}

static int load_file(struct load *ld, const char *path)
{
    struct ini_ctx x = { .ld = ld, .path = path };
    ld->cfg.config_file = strdup(path);
    if (!ld->cfg.config_file)
        return fail(ld, "%s: out of memory", path);
    x.f = fopen(path, "r");
    if (!x.f)
        return fail(ld, "%s: cannot open the config file: %s", path, strerror(errno));
    int rc = ini_parse_stream(ini_read_line, &x, ini_on_pair, &x);
    bool read_error = ferror(x.f);
    fclose(x.f);
    if (rc > 0 && (x.err_line == 0 || rc < x.err_line))
        return fail(ld, "%s:%d: expected `name = value`, a comment or [edgecache]", path, rc);
    if (x.err_line)
        return -1;
    if (rc == -2 || read_error)
        return fail(ld, "%s: cannot read the config file", path);
    return 0;
}

static const char *env_value(char **envp, const char *name)
{
    size_t n = strlen(name);
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

/* One EDGECACHE_* variable ("EDGECACHE_CACHE_DIR=/x") */
static int load_env_var(struct load *ld, const char *entry)
{
    char var[NAME_MAX_LEN], key[NAME_MAX_LEN], why[REASON_MAX];
    const char *eq = strchr(entry, '=');
    size_t n = (size_t)(eq - entry), plen = strlen(ENV_PREFIX);
    if (n >= sizeof var)
        return fail(ld, "environment %.*s: unknown option", (int)n, entry);
    memcpy(var, entry, n);
    var[n] = '\0';
    if (strcmp(var, ENV_CONFIG) == 0)
        return 0;
    for (size_t i = plen; i <= n; i++)
        key[i - plen] = lower(var[i]);
    const struct cfg_option *o = option_by_name(key);
    if (o) {
        char exact[NAME_MAX_LEN];
        option_env(o, exact, sizeof exact);
        if (strcmp(exact, var) != 0)
            o = NULL;
    }
    if (!o) {
        const struct cfg_option *near = closest_option(key);
        char hint[NAME_MAX_LEN] = "";
        if (near)
            option_env(near, hint, sizeof hint);
        return fail(ld, "environment %s: unknown option%s%s%s", var,
                    near ? " (did you mean " : "", hint, near ? "?)" : "");
    }
    if (apply(ld, o, eq + 1, LEVEL_ENV, why, sizeof why) != 0)
        return fail(ld, "environment %s: %s: %s", var, o->name, why);
    return 0;
}

static int load_env(struct load *ld, char **envp)
{
    size_t plen = strlen(ENV_PREFIX);
    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, ENV_PREFIX, plen) != 0 || !strchr(*e, '='))
            continue;
        if (load_env_var(ld, *e) != 0)
            return -1;
    }
    return 0;
}

static const struct cfg_special *special_by_flag(const char *flag, size_t len)
{
    for (size_t i = 0; i < N_SPECIALS; i++) {
        const struct cfg_special *s = &specials[i];
        bool short_hit = s->short_flag && strlen(s->short_flag) == len &&
                         strncmp(s->short_flag, flag, len) == 0;
        bool long_hit = strlen(s->long_flag) == len && strncmp(s->long_flag, flag, len) == 0;
        if (short_hit || long_hit)
            return s;
    }
    return NULL;
}

static bool is_bool_word(const char *v)
{
    static const char *const words[] = {"true", "false", "yes", "no", "on", "off", "1", "0"};
    for (size_t k = 0; k < sizeof words / sizeof words[0]; k++)
        if (strcasecmp(v, words[k]) == 0)
            return true;
    return false;
}

/* Recognises argv[*i] (and its value, when separate) and advances *i. A
 * switch takes an optional separate value when it is a boolean word. */
static int next_arg(struct load *ld, int argc, char **argv, int *i, struct arg *a)
{
    const char *s = argv[(*i)++];
    const char *eq = strncmp(s, "--", 2) == 0 ? strchr(s, '=') : NULL;
    size_t len = eq ? (size_t)(eq - s) : strlen(s);
    const struct cfg_special *sp = special_by_flag(s, len);
    *a = (struct arg){ .kind = sp ? sp->kind : ARG_OPTION, .flag = s, .flag_len = (int)len };
    a->opt = sp ? NULL : option_by_flag(s, len);
    if (!sp && !a->opt) {
        const struct cfg_option *near = NULL;
        char key[NAME_MAX_LEN], hint[NAME_MAX_LEN] = "";
        if (len > 2 && len - 2 < sizeof key && strncmp(s, "--", 2) == 0) {
            for (size_t k = 2; k <= len; k++)
                key[k - 2] = (k == len) ? '\0' : (s[k] == '-' ? '_' : s[k]);
            near = closest_option(key);
        }
        if (near)
            option_flag(near, hint, sizeof hint);
        return fail(ld, "command line: unknown argument '%s' (%s%s%s)", s,
                    near ? "did you mean " : "see --help", hint, near ? "?" : "");
    }
    bool takes_value = sp ? sp->metavar != NULL : !types[a->opt->type].is_switch;
    if (eq && !takes_value && sp)
        return fail(ld, "command line %.*s: takes no value", (int)len, s);
    if (eq)
        a->value = eq + 1;
    else if (!takes_value && !sp && *i < argc && is_bool_word(argv[*i]))
        a->value = argv[(*i)++];    /* "--require-verified false" */
    else if (!takes_value)
        a->value = "true";
    else if (*i < argc && strncmp(argv[*i], "--", 2) != 0)
        a->value = argv[(*i)++];
    else
        return fail(ld, "command line %.*s: missing value (%s)", (int)len, s,
                    sp ? sp->metavar : option_metavar(a->opt));
    if (sp && sp->metavar && a->value[0] == '\0')
        return fail(ld, "command line %.*s: missing value (%s)", (int)len, s, sp->metavar);
    return 0;
}

/* First pass: syntax, the config file, and the arguments that print and exit.
 * Values are applied later, after the file and the environment. */
static enum cfg_result scan_argv(struct load *ld, int argc, char **argv, FILE *out,
                                 const char **config)
{
    struct arg a;
    for (int i = 1; i < argc;) {
        if (next_arg(ld, argc, argv, &i, &a) != 0)
            return CFG_ERROR;
        switch (a.kind) {
        case ARG_OPTION:
            break;
        case ARG_CONFIG:
            *config = a.value;
            break;
        case ARG_HELP:
            cfg_print_help(out, argv[0]);
            return CFG_EXIT;
        case ARG_VERSION:
            fprintf(out, "edgecache %s\n", EDGECACHE_VERSION);
            return CFG_EXIT;
        case ARG_MARKDOWN:
            cfg_print_markdown(out);
            return CFG_EXIT;
        case ARG_EXAMPLE:
            cfg_print_example(out);
            return CFG_EXIT;
        }
    }
    return CFG_OK;
}

static int apply_argv(struct load *ld, int argc, char **argv)
{
    char why[REASON_MAX];
    struct arg a;
    for (int i = 1; i < argc;) {
        if (next_arg(ld, argc, argv, &i, &a) != 0)
            return -1;
        if (a.kind != ARG_OPTION)
            continue;
        if (apply(ld, a.opt, a.value, LEVEL_ARGV, why, sizeof why) != 0)
            return fail(ld, "command line %.*s: %s: %s", a.flag_len, a.flag,
                        a.opt->name, why);
    }
    return 0;
}

static bool host_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcasecmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) ||
               (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

/* Rules that involve more than one option. */
/* admin_token_file: the token is the file's first line. */
static int read_token_file(struct load *ld)
{
    struct cfg *c = &ld->cfg;
    char line[1024];
    if (!c->admin_token_file || !c->admin_token_file[0])
        return 0;
    if (c->admin_token[0])
        return fail(ld, "admin_token_file: set either admin_token or admin_token_file, not both");
    FILE *f = fopen(c->admin_token_file, "r");
    if (!f)
        return fail(ld, "admin_token_file: cannot read %s: %s", c->admin_token_file,
                    strerror(errno));
    if (!fgets(line, sizeof line, f))
        line[0] = '\0';
    fclose(f);
    size_t n = strcspn(line, "\r\n");
    while (n && (line[n - 1] == ' ' || line[n - 1] == '\t'))
        n--;
    line[n] = '\0';
    if (!line[0])
        return fail(ld, "admin_token_file: %s holds no token", c->admin_token_file);
    char *tok = strdup(line);
    if (!tok)
        return fail(ld, "out of memory");
    free(c->admin_token);
    c->admin_token = tok;
    return 0;
}

/* node_id left at its default: on IoT Edge, the device and module ids
 * (stable across re-creations of the container) rather than its host
 * name (the container id). */
static int iotedge_node_id(struct load *ld)
{
    const struct cfg_option *o = option_by_name("node_id");
    const char *dev = env_value(ld->envp, "IOTEDGE_DEVICEID");
    const char *mod = env_value(ld->envp, "IOTEDGE_MODULEID");
    char id[NODE_ID_MAX + 1];
    size_t n = 0;
    if (ld->set_at[o - options] != LEVEL_DEFAULT || !dev || !dev[0])
        return 0;
    for (const char *p = dev; *p && n < NODE_ID_MAX; p++)
        id[n++] = (isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == '_') ? *p : '-';
    for (const char *p = mod && mod[0] ? mod : ""; *p && n < NODE_ID_MAX; p++) {
        if (p == mod && n < NODE_ID_MAX)
            id[n++] = '.';
        if (n < NODE_ID_MAX)
            id[n++] = (isalnum((unsigned char)*p) || *p == '-' || *p == '_') ? *p : '-';
    }
    id[n] = '\0';
    char *copy = strdup(id);
    if (!copy)
        return fail(ld, "out of memory");
    free(ld->cfg.node_id);
    ld->cfg.node_id = copy;
    return 0;
}

static int check_cfg(struct load *ld)
{
    const struct cfg_listen *admin = &ld->cfg.admin_listen;
    if (read_token_file(ld) != 0 || iotedge_node_id(ld) != 0)
        return -1;
    bool v6 = strchr(admin->host, ':') != NULL;
    if (ld->cfg.admin_token[0] == '\0' && !host_is_loopback(admin->host))
        return fail(ld, "admin_token: required because admin_listen %s%s%s:%u is not a "
                    "loopback address; set admin_token, or admin_listen = 127.0.0.1:%u",
                    v6 ? "[" : "", admin->host, v6 ? "]" : "", admin->port, admin->port);
    return 0;
}

static enum cfg_result load_all(struct load *ld, int argc, char **argv, char **envp,
                                FILE *out)
{
    const char *config = NULL;
    enum cfg_result r = scan_argv(ld, argc, argv, out, &config);
    if (r != CFG_OK)
        return r;
    if (!config)
        config = env_value(envp, ENV_CONFIG);
    if (config && config[0] == '\0')
        config = NULL;
    if (apply_defaults(ld) != 0 || (config && load_file(ld, config) != 0) ||
        load_env(ld, envp) != 0 || apply_argv(ld, argc, argv) != 0 || check_cfg(ld) != 0)
        return CFG_ERROR;
    return CFG_OK;
}

enum cfg_result cfg_load(struct cfg *cfg, int argc, char **argv, char **envp,
                         FILE *out, char *err, size_t errlen)
{
    struct load ld = { .err = err, .errlen = errlen, .envp = envp };
    memset(cfg, 0, sizeof *cfg);
    if (err && errlen)
        err[0] = '\0';
    enum cfg_result r = load_all(&ld, argc, argv, envp, out ? out : stdout);
    for (size_t i = 0; r == CFG_OK && i < N_OPTIONS; i++)
        if (options[i].offset == offsetof(struct cfg, cache_dir))
            ld.cfg.cache_dir_given = ld.set_at[i] > LEVEL_DEFAULT;
    if (r == CFG_OK)
        *cfg = ld.cfg;
    else
        cfg_free(&ld.cfg);
    return r;
}

void cfg_free(struct cfg *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (types[options[i].type].clear)
            types[options[i].type].clear(cfg, &options[i]);
    free(cfg->config_file);
    memset(cfg, 0, sizeof *cfg);
}

/* ---- documentation ---------------------------------------------------- */

static const char *default_text(const struct cfg_option *o)
{
    if (o->def_fn)
        return o->def_doc;
    if (o->def && o->def[0])
        return o->def;
    return types[o->type].is_list ? "none" : "empty";
}

static bool default_is_literal(const struct cfg_option *o)
{
    return !o->def_fn && o->def && o->def[0];
}

/* What the value may be beyond its type: "range 100ms..10m",
 * "one of error, warn, info, debug"; "" when nothing. */
static void describe(const struct cfg_option *o, bool markdown, char *buf, size_t len)
{
    const char *q = markdown ? "`" : "";
    size_t used = 0;
    buf[0] = '\0';
    if (types[o->type].format) {
        char lo[32], hi[32];
        types[o->type].format(o->min, lo, sizeof lo);
        types[o->type].format(o->max, hi, sizeof hi);
        snprintf(buf, len, "range %s..%s%s%s", lo, hi, o->unit ? " " : "",
                 o->unit ? o->unit : "");
        return;
    }
    for (int i = 0; o->choices && o->choices[i] && used < len; i++) {
        int w = snprintf(buf + used, len - used, "%s%s%s%s", i ? ", " : "one of ",
                         q, o->choices[i], q);
        used += w > 0 ? (size_t)w : 0;
    }
}

void cfg_print_help(FILE *out, const char *argv0)
{
    char flag[NAME_MAX_LEN], extra[160];
    fprintf(out, "Usage: %s [OPTION]...\n"
            "Caches over-the-air update payloads for the devices behind this gateway.\n\n",
            argv0 && argv0[0] ? argv0 : "edgecache");
    for (size_t i = 0; i < N_SPECIALS; i++) {
        const struct cfg_special *s = &specials[i];
        fprintf(out, "  %s%s%s%s%s\n      %s\n", s->short_flag ? s->short_flag : "",
                s->short_flag ? ", " : "", s->long_flag, s->metavar ? " " : "",
                s->metavar ? s->metavar : "", s->help);
    }
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct cfg_option *o = &options[i];
        option_flag(o, flag, sizeof flag);
        describe(o, false, extra, sizeof extra);
        fprintf(out, "  %s %s\n      %s (default %s%s%s)\n", flag, option_metavar(o),
                o->help, default_text(o), extra[0] ? "; " : "", extra);
    }
    fputs("\nEvery option can also be set in the config file as `name = value` or in\n"
          "the environment as EDGECACHE_NAME (cache_dir: EDGECACHE_CACHE_DIR).\n"
          "Precedence: defaults < config file < environment < command line.\n"
          "Lists take entries separated by commas or spaces; a repeated flag adds\n"
          "entries, and a list set at a higher level replaces the lower level's.\n"
          "Durations: 500ms, 10s, 2m, 1h, 7d (a bare number is seconds).\n"
          "\nCommands, run instead of the daemon with the same options:\n"
          "  edgecache verify [--repair]            rehash the store offline\n"
          "  edgecache rewrite --cache-url URL FILE rewrite a manifest for children\n"
          "  edgecache import MANIFEST FILE...      sideload files an import manifest lists\n"
          "  edgecache health                       ask the running daemon's /healthz (exit 0 or 1)\n", out);
}

/* Markdown table cells: '|' would end the cell. */
static void md_cell(FILE *out, const char *s, bool code)
{
    fputs(code ? " `" : " ", out);
    for (; *s; s++) {
        if (*s == '|')
            fputc('\\', out);
        fputc(*s, out);
    }
    fputs(code ? "` |" : " |", out);
}

void cfg_print_markdown(FILE *out)
{
    char flag[NAME_MAX_LEN + 32], env[NAME_MAX_LEN], extra[160], meaning[512];
    fputs("| key | environment | flag | default | meaning |\n"
          "|---|---|---|---|---|\n", out);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct cfg_option *o = &options[i];
        char name[NAME_MAX_LEN];
        option_flag(o, name, sizeof name);
        snprintf(flag, sizeof flag, "%s %s", name, option_metavar(o));
        option_env(o, env, sizeof env);
        describe(o, true, extra, sizeof extra);
        snprintf(meaning, sizeof meaning, "%s%s%s", o->help, extra[0] ? "; " : "", extra);
        fputc('|', out);
        md_cell(out, o->name, true);
        md_cell(out, env, true);
        md_cell(out, flag, true);
        md_cell(out, default_text(o), default_is_literal(o));
        md_cell(out, meaning, false);
        fputc('\n', out);
    }
    fputs("\nThe config file is named by `-c FILE` / `--config FILE` or `EDGECACHE_CONFIG`.\n"
          "Precedence: defaults < config file < environment < command line.\n"
          "Lists take entries separated by commas or spaces; a repeated flag adds entries,\n"
          "and a list set at a higher level replaces the lower level's.\n"
          "Durations: `500ms`, `10s`, `2m`, `1h`, `7d` (a bare number is seconds).\n", out);
}

/* Comment lines of at most ~78 columns (the file's lines must stay under
 * inih's limit), broken at spaces; '\n' in text starts a new line. */
static void print_comment(FILE *out, const char *text)
{
    const size_t width = 76;
    for (const char *p = text; *p;) {
        size_t line = strcspn(p, "\n");
        while (line > width) {
            size_t cut = width;
            while (cut > 0 && p[cut] != ' ')
                cut--;
            if (cut == 0)
                cut = width;
            fprintf(out, "# %.*s\n", (int)cut, p);
            p += cut + (p[cut] == ' ');
            line = strcspn(p, "\n");
        }
        fprintf(out, "# %.*s\n", (int)line, p);
        p += line + (p[line] == '\n');
    }
}

/* "#name = default", a list's long default split over repeated keys (a
 * repeated list key in the file adds entries). */
static void print_setting(FILE *out, const struct cfg_option *o)
{
    const char *v = default_is_literal(o) ? o->def : "";
    if (!types[o->type].is_list || strlen(v) <= 100) {
        fprintf(out, "#%s =%s%s\n", o->name, v[0] ? " " : "", v);
        return;
    }
    while (*v) {
        size_t n = strlen(v);
        if (n > 100) {
            n = 100;
            while (n > 0 && v[n] != ' ')
                n--;
            if (n == 0)
                n = strcspn(v, " ");
        }
        fprintf(out, "#%s = %.*s\n", o->name, (int)n, v);
        v += n;
        v += strspn(v, " ");
    }
}

void cfg_print_example(FILE *out)
{
    char extra[160];
    fputs("# edgecache configuration: `name = value` lines, no section needed\n"
          "# ([edgecache] is accepted). Every option is listed with its default;\n"
          "# remove the '#' to change one. Quotes around a value are optional.\n"
          "# Each option can also be set in the environment (EDGECACHE_NAME) or on\n"
          "# the command line (--name), which take precedence over this file.\n"
          "# Lists take entries separated by commas or spaces; repeating a key adds\n"
          "# entries. Durations: 500ms, 10s, 2m, 1h, 7d (a bare number is seconds).\n", out);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct cfg_option *o = &options[i];
        char text[2048];
        describe(o, false, extra, sizeof extra);
        snprintf(text, sizeof text, "%s\ndefault: %s%s%s", o->help, default_text(o),
                 extra[0] ? "; " : "", extra);
        fputs("\n", out);
        print_comment(out, text);
        print_setting(out, o);
    }
}

int cfg_flag_takes_value(const char *arg)
{
    size_t len = strlen(arg);
    if (strncmp(arg, "--", 2) == 0 && strchr(arg, '='))
        return 0;                   /* --name=value carries its own */
    const struct cfg_special *sp = special_by_flag(arg, len);
    if (sp)
        return sp->metavar != NULL;
    const struct cfg_option *o = option_by_flag(arg, len);
    return o && !types[o->type].is_switch;
}
