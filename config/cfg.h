/*
 * cfg — edgecache's configuration: one declarative option table that drives
 * the INI file, the EDGECACHE_* environment, the command line and --help.
 *
 * Precedence: built-in defaults < config file < environment < command line.
 * Only this module parses and validates; the rest of edgecache receives a
 * `const struct cfg *` that never changes after cfg_load() returns.
 *
 * Names: the key `cache_dir` is EDGECACHE_CACHE_DIR in the environment and
 * --cache-dir on the command line. List options (allow, route) take several
 * values separated by commas or spaces; on the command line the flag may be
 * repeated, and every occurrence appends. A list given at a higher level
 * replaces the list from a lower level (the environment's `allow` replaces
 * the file's, it does not add to it). Within the file, a repeated list key
 * (or an indented continuation line) appends too; an empty value at a
 * higher level empties the list. A repeated scalar: the last one wins.
 *
 * The file: `name = value` lines (inih), `#` and `;` comments, surrounding
 * white space and one pair of double quotes stripped from values. Keys sit
 * at the top or under `[edgecache]`; any other section is an error. Lines
 * longer than inih's buffer (197 characters) are refused, not split.
 * Every EDGECACHE_* variable must name an option (EDGECACHE_CONFIG names
 * the file); an unknown one is an error, like an unknown key or flag.
 *
 * Errors name the key, and for the file its path and line, e.g.
 *   "edgecache.conf:12: stall_timeout: '0' is out of range (1s..1h)"
 * and cfg_load() returns CFG_ERROR before anything listens.
 *
 * Thread: call from the main thread before the loop starts.
 */
#ifndef EDGECACHE_CFG_H
#define EDGECACHE_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* host:port for a listener. host "0.0.0.0", "127.0.0.1", "::" or a name;
 * IPv6 is written "[::]:8080" and stored without brackets; ":8080" means
 * host "0.0.0.0". */
struct cfg_listen {
    char host[256];
    unsigned port;              /* 1..65535 */
};

/*
 * One allow-list entry: "SCHEME://HOSTPATTERN[:PORT]".
 * HOSTPATTERN is a lower-cased host name or address; a leading "*." matches
 * one or more labels ("*.blob.core.windows.net" matches
 * "a.blob.core.windows.net" and "a.b.blob.core.windows.net", not
 * "blob.core.windows.net"). Without a port the scheme's default port (80 for
 * http, 443 for https) is the only port allowed. An IPv6 address keeps its
 * brackets ("[::1]"), as curl_url's CURLUPART_HOST returns it.
 */
struct cfg_allow {
    char scheme[8];             /* "http" or "https" */
    char host[256];             /* pattern, lower case */
    unsigned port;              /* explicit or scheme default */
};

/* One route: a path prefix on the data plane mapped to an origin base URL.
 * "/debian/=http://deb.debian.org/debian/" : GET /debian/pool/x.deb fetches
 * http://deb.debian.org/debian/pool/x.deb. Prefix starts and ends with '/',
 * url ends with '/'. */
struct cfg_route {
    char *prefix;
    char *url;
};

/* One freshness rule by path (in the spirit of Squid's refresh_pattern):
 * "PATTERN=POLICY". A pattern without '/' is matched (fnmatch, '*' and '?'
 * and [...]) against the path's last segment, one with '/' against the
 * whole path; the query is never part of it. The first rule that matches
 * decides:
 *   immutable   stored and served without revalidation, whatever the
 *               response says of freshness (no-store and private hold)
 *   revalidate  revalidated before every use, whatever it says
 *   MIN..MAX    when the response gives no explicit freshness, it is fresh
 *               for its heuristic lifetime clamped to [MIN, MAX] */
enum cfg_refresh_kind { CFG_REFRESH_IMMUTABLE, CFG_REFRESH_REVALIDATE, CFG_REFRESH_RANGE };
struct cfg_refresh {
    char *pattern;
    enum cfg_refresh_kind kind;
    uint64_t min_ms, max_ms;    /* CFG_REFRESH_RANGE */
};

enum cfg_log_level { CFG_LOG_ERROR, CFG_LOG_WARN, CFG_LOG_INFO, CFG_LOG_DEBUG };
enum cfg_log_format { CFG_LOG_TEXT, CFG_LOG_JSON };

struct cfg {
    char *config_file;          /* NULL when none was given */
    struct cfg_listen listen;
    struct cfg_listen admin_listen;
    char *admin_token;          /* "" when unset; read from admin_token_file when that is set */
    char *admin_token_file;     /* "" when unset */
    bool metrics_public;        /* GET /metrics needs no token */
    char *cache_dir;
    bool cache_dir_given;       /* set by the file, the environment or a flag (not the default) */
    char *cache_size;           /* "80%" or "20G": see cfg_parse_budget */
    struct cfg_allow *allow;
    size_t n_allow;
    struct cfg_allow *immutable; /* origins whose URLs never change content */
    size_t n_immutable;
    uint64_t heuristic_max_age_ms;
    struct cfg_refresh *refresh; /* freshness rules by path, first match wins */
    size_t n_refresh;
    uint64_t max_redirects;     /* redirects a fill follows upstream; 0: passed on */
    uint64_t stale_if_error_ms;
    struct cfg_route *routes;
    size_t n_routes;
    char *node_id;              /* default: the host name */
    char *peers;                /* "" when none: see cache/peers.h */
    uint64_t peer_replicas;     /* copies of a pinned payload in the layer */
    char *parent;               /* "" when none: misses go to the origin */
    bool parent_fallback_to_origin;
    char *parent_admin_url;     /* "" when none: manifests are not handed up */
    char *parent_admin_token;
    char *advertise_url;        /* "" when unset: children reach us at the request's Host */
    uint64_t connect_timeout_ms;
    uint64_t stall_timeout_ms;  /* upstream sends nothing for this long */
    uint64_t resume_attempts;   /* resumes of a broken fill before it fails */
    bool require_verified;      /* refuse content with no expected digest */
    uint64_t prefetch_concurrency; /* prefetched files fetched at once */
    uint64_t manifest_max_bytes;   /* largest control-plane body */
    uint64_t workers;           /* data-plane event loops; 0: one per CPU */
    uint64_t max_connections;   /* data-plane connections at once */
    uint64_t client_timeout_ms; /* a client silent (or not reading) this long is dropped */
    uint64_t header_timeout_ms; /* a request's header block must arrive within this */
    uint64_t shutdown_grace_ms; /* SIGTERM: responses in progress may finish for this long */
    enum cfg_log_level log_level;
    enum cfg_log_format log_format;
};

enum cfg_result {
    CFG_OK = 0,                 /* run the daemon */
    CFG_EXIT = 1,               /* --help, --version, --help-markdown or
                                   --help-config was printed: exit 0 */
    CFG_ERROR = -1,             /* err holds the message: exit non-zero */
};

/*
 * Builds *cfg from defaults, the file named by --config / -c /
 * EDGECACHE_CONFIG (if any), the environment `envp` (NULL-terminated
 * "NAME=value" strings) and argv. On CFG_EXIT, `out` received the --help or
 * --version text. On CFG_ERROR, err (errlen bytes) holds one line naming the
 * key, and *cfg is left empty (nothing to free, cfg_free is still safe).
 */
enum cfg_result cfg_load(struct cfg *cfg, int argc, char **argv, char **envp,
                         FILE *out, char *err, size_t errlen);

void cfg_free(struct cfg *cfg);

/* For commands that take operands after the options: 1 when the command-
 * line argument arg (e.g. "--cache-dir", "-c") is a flag followed by its
 * value as the next argument, else 0. */
int cfg_flag_takes_value(const char *arg);

/* --help text generated from the table. */
void cfg_print_help(FILE *out, const char *argv0);

/* The configuration reference as a Markdown table, generated from the option
 * table (README.md's reference is checked against this by a test). Printed
 * by `edgecache --help-markdown`. */
void cfg_print_markdown(FILE *out);

/* config/edgecache.conf.example, generated from the option table: every
 * option commented out with its default (a test keeps the file equal to
 * this output). Printed by `edgecache --help-config`. */
void cfg_print_example(FILE *out);

/* Parse helpers, exposed for the tests and for callers that take the same
 * shapes elsewhere. Each returns 0 on success, -1 with a reason in err. */
int cfg_parse_size(const char *s, uint64_t *out, char *err, size_t errlen);
int cfg_parse_duration_ms(const char *s, uint64_t *out, char *err, size_t errlen);
int cfg_parse_listen(const char *s, struct cfg_listen *out, char *err, size_t errlen);
int cfg_parse_allow(const char *s, struct cfg_allow *out, char *err, size_t errlen);
/* cache_size: a size of at least 1M (*bytes) or a share of the disk "1%".."100%"
 * (*percent); the other out-parameter is 0. */
int cfg_parse_budget(const char *s, uint64_t *bytes, unsigned *percent, char *err,
                     size_t errlen);

#endif
