/*
 * fuzz_config — the configuration loader (config/cfg.h): the INI file and
 * the EDGECACHE_* environment.
 *
 * Feeds, for every input, two loads:
 *   1. the input as the config file: written to a memfd (a temp file where
 *      memfd_create is missing) and named with `-c /proc/self/fd/N`;
 *   2. the input's lines as the environment (envp, "EDGECACHE_NAME=value"
 *      entries; other lines are there too and must be ignored), with no
 *      file: EDGECACHE_CONFIG lines are dropped so that no input makes the
 *      loader open another file.
 * `out` is /dev/null, so nothing is printed per run.
 *
 * Checks, beyond "no crash, no leak, no UB":
 *   - the result is CFG_OK or CFG_ERROR (never CFG_EXIT: no flag asks for
 *     help); an error has a message that names the file and a line within
 *     it (file) or "environment" (env), or a rule checked once every
 *     source is read (admin_token, admin_token_file), and leaves *cfg
 *     empty; a file with a NUL byte never loads;
 *   - a loaded cfg keeps the header's promises: listeners with ports
 *     1..65535, every allow and immutable entry http(s) with a lower-case
 *     host and a port that re-parses (cfg_parse_allow) to the same entry,
 *     routes whose prefix starts and ends with '/' and whose URL ends with
 *     '/', cache_size accepted by cfg_parse_budget, every number within
 *     its documented range, a token whenever admin_listen is not loopback.
 *
 * run.sh: -max_len=8192
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config/cfg.h"
#include "fuzz_util.h"

#define MAX_ENV 64
#define SEC 1000ull
#define DAY (86400 * SEC)

static FILE *devnull;
static int conf_fd = -1;
static char conf_path[64];
static char tmp_path[64];
static char hostname[256];

static void remove_tmp(void)
{
    if (tmp_path[0])
        unlink(tmp_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    devnull = fopen("/dev/null", "w");
    conf_fd = memfd_create("fuzz_config.conf", 0);
    if (conf_fd >= 0 && snprintf(conf_path, sizeof conf_path, "/proc/self/fd/%d", conf_fd) &&
        access(conf_path, R_OK) != 0) {
        close(conf_fd);
        conf_fd = -1;
    }
    if (conf_fd < 0) {
        const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(tmp_path, sizeof tmp_path, "%.40s/fuzz_config-XXXXXX", dir);
        conf_fd = mkstemp(tmp_path);
        snprintf(conf_path, sizeof conf_path, "%s", tmp_path);
        atexit(remove_tmp);
    }
    if (!devnull || conf_fd < 0) {
        fprintf(stderr, "fuzz_config: cannot open /dev/null or a config file\n");
        abort();
    }
    if (gethostname(hostname, sizeof hostname - 1) != 0)
        hostname[0] = '\0';
    return 0;
}

static void write_conf(const uint8_t *data, size_t size)
{
    if (ftruncate(conf_fd, 0) != 0)
        abort();
    for (size_t done = 0; done < size;) {
        ssize_t n = pwrite(conf_fd, data + done, size - done, (off_t)done);
        if (n <= 0)
            abort();
        done += (size_t)n;
    }
}

static int is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcasecmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return 0;
}

static void check_listen(const struct cfg_listen *l, const char *what)
{
    FUZZ_CHECK(memchr(l->host, '\0', sizeof l->host) && l->host[0] != '\0',
               "%s: empty or unterminated host", what);
    FUZZ_CHECK(l->port >= 1 && l->port <= 65535, "%s: port %u", what, l->port);
}

static void check_allow(const struct cfg_allow *a, size_t n, const char *what)
{
    FUZZ_CHECK(n == 0 || a, "%s: %zu entries, NULL array", what, n);
    for (size_t i = 0; i < n; i++) {
        const struct cfg_allow *e = &a[i];
        FUZZ_CHECK(strcmp(e->scheme, "http") == 0 || strcmp(e->scheme, "https") == 0,
                   "%s[%zu]: scheme '%.8s'", what, i, e->scheme);
        FUZZ_CHECK(memchr(e->host, '\0', sizeof e->host) && e->host[0] != '\0',
                   "%s[%zu]: empty or unterminated host", what, i);
        for (const char *c = e->host; *c; c++)
            FUZZ_CHECK(!(*c >= 'A' && *c <= 'Z'), "%s[%zu]: host '%s' not lower case", what,
                       i, e->host);
        FUZZ_CHECK(e->port >= 1 && e->port <= 65535, "%s[%zu]: port %u", what, i, e->port);

        /* The entry written out parses back to itself. */
        char text[300], err[512];
        struct cfg_allow back;
        memset(&back, 0, sizeof back);
        snprintf(text, sizeof text, "%s://%s:%u", e->scheme, e->host, e->port);
        FUZZ_CHECK(cfg_parse_allow(text, &back, err, sizeof err) == 0,
                   "%s[%zu]: '%s' does not parse again: %s", what, i, text, err);
        FUZZ_CHECK(strcmp(back.scheme, e->scheme) == 0 && strcmp(back.host, e->host) == 0 &&
                       back.port == e->port,
                   "%s[%zu]: '%s' parses again as %s://%s:%u", what, i, text, back.scheme,
                   back.host, back.port);
    }
}

static void check_loaded(const struct cfg *c, const char *mode)
{
    check_listen(&c->listen, "listen");
    check_listen(&c->admin_listen, "admin_listen");
    FUZZ_CHECK(c->admin_token && c->cache_dir && c->cache_size && c->node_id && c->parent &&
                   c->parent_admin_url && c->parent_admin_token && c->advertise_url,
               "%s: a string option is NULL", mode);
    FUZZ_CHECK(c->cache_dir[0] != '\0', "%s: empty cache_dir", mode);
    FUZZ_CHECK(c->node_id[0] != '\0', "%s: empty node_id", mode);
    if (strcmp(c->node_id, hostname) != 0)     /* the default is the host name */
        for (const char *p = c->node_id; *p; p++)
            FUZZ_CHECK((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                           (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == '_',
                       "%s: node_id '%s'", mode, c->node_id);
    if (c->admin_token[0] == '\0')
        FUZZ_CHECK(is_loopback(c->admin_listen.host),
                   "%s: admin_listen %s is not loopback and there is no token", mode,
                   c->admin_listen.host);

    uint64_t bytes = 1;
    unsigned percent = 1;
    char err[512];
    FUZZ_CHECK(cfg_parse_budget(c->cache_size, &bytes, &percent, err, sizeof err) == 0,
               "%s: cache_size '%s' does not parse again: %s", mode, c->cache_size, err);
    FUZZ_CHECK((bytes == 0) != (percent == 0), "%s: cache_size '%s': %llu bytes, %u%%", mode,
               c->cache_size, (unsigned long long)bytes, percent);

    check_allow(c->allow, c->n_allow, "allow");
    check_allow(c->immutable, c->n_immutable, "immutable");
    FUZZ_CHECK(c->n_routes == 0 || c->routes, "%s: routes NULL", mode);
    for (size_t i = 0; i < c->n_routes; i++) {
        const struct cfg_route *r = &c->routes[i];
        size_t pl = r->prefix ? strlen(r->prefix) : 0, ul = r->url ? strlen(r->url) : 0;
        FUZZ_CHECK(pl > 0 && r->prefix[0] == '/' && r->prefix[pl - 1] == '/',
                   "%s: route prefix '%s'", mode, r->prefix ? r->prefix : "(null)");
        FUZZ_CHECK(ul > 0 && r->url[ul - 1] == '/', "%s: route URL '%s'", mode,
                   r->url ? r->url : "(null)");
    }

    FUZZ_CHECK(c->heuristic_max_age_ms <= DAY, "heuristic_max_age %llu",
               (unsigned long long)c->heuristic_max_age_ms);
    FUZZ_CHECK(c->stale_if_error_ms <= 365 * DAY, "stale_if_error %llu",
               (unsigned long long)c->stale_if_error_ms);
    FUZZ_CHECK(c->connect_timeout_ms >= 100 && c->connect_timeout_ms <= 600 * SEC,
               "connect_timeout %llu", (unsigned long long)c->connect_timeout_ms);
    FUZZ_CHECK(c->stall_timeout_ms >= SEC && c->stall_timeout_ms <= 3600 * SEC,
               "stall_timeout %llu", (unsigned long long)c->stall_timeout_ms);
    FUZZ_CHECK(c->resume_attempts <= 100, "resume_attempts %llu",
               (unsigned long long)c->resume_attempts);
    FUZZ_CHECK(c->prefetch_concurrency >= 1 && c->prefetch_concurrency <= 64,
               "prefetch_concurrency %llu", (unsigned long long)c->prefetch_concurrency);
    FUZZ_CHECK(c->manifest_max_bytes >= 1024 && c->manifest_max_bytes <= 64ull << 20,
               "manifest_max_bytes %llu", (unsigned long long)c->manifest_max_bytes);
    FUZZ_CHECK(c->max_connections >= 1 && c->max_connections <= 100000,
               "max_connections %llu", (unsigned long long)c->max_connections);
    FUZZ_CHECK(c->log_level <= CFG_LOG_DEBUG && c->log_format <= CFG_LOG_JSON,
               "log_level %d, log_format %d", c->log_level, c->log_format);
}

static void check_failed(const struct cfg *c, const char *err, const char *mode)
{
    FUZZ_CHECK(err[0] != '\0', "%s: CFG_ERROR without a message", mode);
    FUZZ_CHECK(!c->cache_dir && !c->allow && c->n_allow == 0 && !c->node_id && !c->routes &&
                   c->n_routes == 0 && !c->config_file,
               "%s: CFG_ERROR (%s) but *cfg is not empty", mode, err);
}

/* The file: "PATH:LINE: ..." with LINE within the input, or "PATH: ...". */
static void load_as_file(const uint8_t *data, size_t size)
{
    struct cfg c;
    char err[512] = "";
    char *argv[] = { "edgecache", "-c", conf_path, NULL };
    char *envp[] = { NULL };
    write_conf(data, size);
    enum cfg_result r = cfg_load(&c, 3, argv, envp, devnull, err, sizeof err);
    FUZZ_CHECK(r == CFG_OK || r == CFG_ERROR, "file: result %d", r);
    /* A config file is text: a NUL byte anywhere is refused (the line it
     * is on, or an earlier error). */
    FUZZ_CHECK(r == CFG_ERROR || !memchr(data, '\0', size),
               "file: a file with a NUL byte loaded");
    if (r == CFG_OK) {
        FUZZ_CHECK(c.config_file && strcmp(c.config_file, conf_path) == 0,
                   "file: config_file %s", c.config_file ? c.config_file : "(null)");
        check_loaded(&c, "file");
    } else {
        check_failed(&c, err, "file");
        size_t plen = strlen(conf_path);
        /* rules checked once every source is read name their key, not a line:
         * admin_token (beyond loopback) and admin_token_file (its file read) */
        if (fuzz_starts_with(err, "admin_token: ") || fuzz_starts_with(err, "admin_token_file: "))
            goto out;
        FUZZ_CHECK(strncmp(err, conf_path, plen) == 0 && err[plen] == ':',
                   "file: the message does not name the file: %s", err);
        if (err[plen + 1] >= '0' && err[plen + 1] <= '9') {
            size_t lines = 1;
            for (size_t i = 0; i < size; i++)
                lines += data[i] == '\n';
            unsigned long line = strtoul(err + plen + 1, NULL, 10);
            FUZZ_CHECK(line >= 1 && line <= lines, "file: line %lu of %zu lines: %s", line,
                       lines, err);
        }
    }
out:
    cfg_free(&c);
}

static void load_as_env(const uint8_t *data, size_t size)
{
    struct cfg c;
    char err[512] = "";
    char *argv[] = { "edgecache", NULL };
    char *envp[MAX_ENV + 1], *fields[MAX_ENV];
    char *buf = fuzz_cstr(data, size);
    size_t n = fuzz_split(buf, '\n', fields, MAX_ENV), k = 0;
    for (size_t i = 0; i < n; i++)
        if (!fuzz_starts_with(fields[i], "EDGECACHE_CONFIG="))
            envp[k++] = fields[i];
    envp[k] = NULL;
    enum cfg_result r = cfg_load(&c, 1, argv, envp, devnull, err, sizeof err);
    FUZZ_CHECK(r == CFG_OK || r == CFG_ERROR, "env: result %d", r);
    if (r == CFG_OK) {
        FUZZ_CHECK(c.config_file == NULL, "env: a config file without one given");
        check_loaded(&c, "env");
    } else {
        check_failed(&c, err, "env");
        FUZZ_CHECK(fuzz_starts_with(err, "environment ") ||
                       fuzz_starts_with(err, "admin_token: ") ||
                       fuzz_starts_with(err, "admin_token_file: "),
                   "env: the message does not name the environment: %s", err);
    }
    cfg_free(&c);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    load_as_file(data, size);
    load_as_env(data, size);
    return 0;
}
