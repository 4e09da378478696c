/*
 * test_cfg — the configuration as an operator meets it: defaults, the
 * config file, EDGECACHE_* variables and flags, their precedence, the error
 * messages (which must name the key and where it was set), --help,
 * --version, the Markdown reference, the example file, and the logger's
 * line formats.
 *
 * Config files are written into a mkdtemp directory that each test removes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/cfg.h"
#include "config/log.h"
#include "version.h"

#define MAX_FILES 8
#define ERRLEN 512

/* argv with the program name first, NULL-terminated. */
#define ARGV(...) ((char *[]){ "edgecache", __VA_ARGS__, NULL })
#define ARGV0 ((char *[]){ "edgecache", NULL })
#define ENV(...) ((char *[]){ __VA_ARGS__, NULL })
#define NOENV ((char *[]){ NULL })

struct fx {
    char dir[64];
    char files[MAX_FILES][PATH_MAX];
    int n_files;
};

static int fx_setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    strcpy(fx->dir, "/tmp/edgecache-test-cfg-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    *state = fx;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *fx = *state;
    for (int i = 0; i < fx->n_files; i++)
        unlink(fx->files[i]);
    int rc = rmdir(fx->dir);
    free(fx);
    return rc;
}

/* Writes text to a file in the test's directory; returns its path. */
static char *write_file(struct fx *fx, const char *name, const char *text)
{
    assert_true(fx->n_files < MAX_FILES);
    char *path = fx->files[fx->n_files++];
    char built[PATH_MAX];
    snprintf(built, sizeof built, "%s/%s", fx->dir, name);
    memcpy(path, built, sizeof built);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return path;
}

static int count(char **v)
{
    int n = 0;
    while (v[n])
        n++;
    return n;
}

static enum cfg_result load(struct cfg *c, char **argv, char **envp, char *err)
{
    return cfg_load(c, count(argv), argv, envp, stdout, err, ERRLEN);
}

/* Loads, expecting success, and fails the test with the message otherwise. */
static void load_ok(struct cfg *c, char **argv, char **envp)
{
    char err[ERRLEN];
    enum cfg_result r = load(c, argv, envp, err);
    if (r != CFG_OK)
        fail_msg("cfg_load failed: %s", err);
}

/* Loads, expecting CFG_ERROR and an empty *c; err receives the message. */
static void load_err(char **argv, char **envp, char *err)
{
    struct cfg c;
    assert_int_equal(load(&c, argv, envp, err), CFG_ERROR);
    assert_null(c.cache_dir);
    assert_null(c.allow);
    assert_int_equal(c.n_allow, 0);
    assert_null(c.node_id);
    cfg_free(&c);
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!hay)
        fail_msg("expected \"%s\", got nothing", needle);
    else if (!strstr(hay, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, hay);
}

static void assert_allow(const struct cfg_allow *a, const char *scheme, const char *host,
                         unsigned port)
{
    assert_string_equal(a->scheme, scheme);
    assert_string_equal(a->host, host);
    assert_int_equal(a->port, port);
}

/* Runs cfg_load with its output captured into a malloc'd string. */
static enum cfg_result load_capture(char **argv, char **envp, char **text)
{
    struct cfg c;
    char err[ERRLEN];
    size_t len;
    FILE *out = open_memstream(text, &len);
    assert_non_null(out);
    enum cfg_result r = cfg_load(&c, count(argv), argv, envp, out, err, sizeof err);
    fclose(out);
    cfg_free(&c);
    return r;
}

typedef void (*print_fn)(FILE *out);

static char *capture(print_fn print)
{
    char *text = NULL;
    size_t len;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    print(out);
    fclose(out);
    return text;
}

/* ---- defaults and precedence ------------------------------------------ */

static void test_defaults(void **state)
{
    struct cfg c;
    char host[256] = "";
    (void)state;
    load_ok(&c, ARGV0, ENV("PATH=/usr/bin", "HOME=/root"));
    assert_null(c.config_file);
    assert_string_equal(c.listen.host, "0.0.0.0");
    assert_int_equal(c.listen.port, 8080);
    assert_string_equal(c.admin_listen.host, "127.0.0.1");
    assert_int_equal(c.admin_listen.port, 8081);
    assert_string_equal(c.admin_token, "");
    assert_string_equal(c.cache_dir, "./edgecache-data");
    assert_int_equal(c.n_allow, 2);
    assert_allow(&c.allow[0], "http", "*.dl.adu.microsoft.com", 80);
    assert_allow(&c.allow[1], "https", "*.blob.core.windows.net", 443);
    assert_int_equal(c.n_routes, 0);
    assert_null(c.routes);
    assert_int_equal(gethostname(host, sizeof host - 1), 0);
    assert_string_equal(c.node_id, host);
    assert_int_equal(c.connect_timeout_ms, 10000);
    assert_int_equal(c.stall_timeout_ms, 30000);
    assert_int_equal(c.max_connections, 1024);
    assert_int_equal(c.log_level, CFG_LOG_INFO);
    assert_int_equal(c.log_format, CFG_LOG_TEXT);
    cfg_free(&c);
}

static void test_precedence_scalar(void **state)
{
    struct fx *fx = *state;
    struct cfg c;
    char *file = write_file(fx, "a.conf", "cache_dir = /from/file\nlog_level = debug\n");
    char *other = write_file(fx, "b.conf", "cache_dir = /from/other-file\n");
    char env_config[PATH_MAX + 32];
    snprintf(env_config, sizeof env_config, "EDGECACHE_CONFIG=%s", file);

    load_ok(&c, ARGV("-c", file), NOENV);
    assert_string_equal(c.cache_dir, "/from/file");
    assert_string_equal(c.config_file, file);
    cfg_free(&c);

    load_ok(&c, ARGV0, ENV(env_config));
    assert_string_equal(c.cache_dir, "/from/file");
    assert_string_equal(c.config_file, file);
    cfg_free(&c);

    load_ok(&c, ARGV0, ENV(env_config, "EDGECACHE_CACHE_DIR=/from/env"));
    assert_string_equal(c.cache_dir, "/from/env");
    assert_int_equal(c.log_level, CFG_LOG_DEBUG);  /* the file still counts */
    cfg_free(&c);

    load_ok(&c, ARGV("--cache-dir", "/from/argv"), ENV(env_config, "EDGECACHE_CACHE_DIR=/from/env"));
    assert_string_equal(c.cache_dir, "/from/argv");
    cfg_free(&c);

    load_ok(&c, ARGV("--cache-dir=/from/argv-eq"), ENV("EDGECACHE_CACHE_DIR=/from/env"));
    assert_string_equal(c.cache_dir, "/from/argv-eq");
    cfg_free(&c);

    /* --config on the command line wins over EDGECACHE_CONFIG */
    load_ok(&c, ARGV("--config", other), ENV(env_config));
    assert_string_equal(c.cache_dir, "/from/other-file");
    assert_int_equal(c.log_level, CFG_LOG_INFO);
    cfg_free(&c);
}

static void test_precedence_list(void **state)
{
    struct fx *fx = *state;
    struct cfg c;
    char *file = write_file(fx, "lists.conf",
                            "allow = http://file-a.example\n"
                            "allow = http://file-b.example, http://file-c.example\n"
                            "route = /debian/=http://deb.debian.org/debian/\n");
    char env_config[PATH_MAX + 32];
    snprintf(env_config, sizeof env_config, "EDGECACHE_CONFIG=%s", file);

    /* the file replaces the default list; repeated keys in the file add */
    load_ok(&c, ARGV0, ENV(env_config));
    assert_int_equal(c.n_allow, 3);
    assert_allow(&c.allow[0], "http", "file-a.example", 80);
    assert_allow(&c.allow[2], "http", "file-c.example", 80);
    assert_int_equal(c.n_routes, 1);
    assert_string_equal(c.routes[0].prefix, "/debian/");
    assert_string_equal(c.routes[0].url, "http://deb.debian.org/debian/");
    cfg_free(&c);

    /* the environment replaces the file's list; an empty value empties it */
    load_ok(&c, ARGV0, ENV(env_config, "EDGECACHE_ALLOW=https://env-a.example  https://env-b.example:8443",
                           "EDGECACHE_ROUTE="));
    assert_int_equal(c.n_allow, 2);
    assert_allow(&c.allow[0], "https", "env-a.example", 443);
    assert_allow(&c.allow[1], "https", "env-b.example", 8443);
    assert_int_equal(c.n_routes, 0);
    cfg_free(&c);

    /* the command line replaces the environment's list; repeated flags add */
    load_ok(&c, ARGV("--allow", "http://arg-a.example", "--allow=http://arg-b.example,http://arg-c.example"),
            ENV(env_config, "EDGECACHE_ALLOW=https://env-a.example"));
    assert_int_equal(c.n_allow, 3);
    assert_allow(&c.allow[0], "http", "arg-a.example", 80);
    assert_allow(&c.allow[1], "http", "arg-b.example", 80);
    assert_allow(&c.allow[2], "http", "arg-c.example", 80);
    assert_int_equal(c.n_routes, 1);   /* not given on the command line: the file's */
    cfg_free(&c);

    /* the command line replaces the file's list when the environment is silent */
    load_ok(&c, ARGV("--route", "/x/=https://x.example/base/"), ENV(env_config));
    assert_int_equal(c.n_routes, 1);
    assert_string_equal(c.routes[0].prefix, "/x/");
    assert_string_equal(c.routes[0].url, "https://x.example/base/");
    cfg_free(&c);
}

static void test_file_syntax(void **state)
{
    struct fx *fx = *state;
    struct cfg c;
    char *file = write_file(fx, "syntax.conf",
                            "# comment\r\n"
                            "; another comment\r\n"
                            "[edgecache]\r\n"
                            "  listen   =   [::]:9090   \r\n"
                            "cache_dir = \"/var/cache/edge cache\"\r\n"
                            "stall_timeout = 2m ; two minutes\r\n"
                            "allow = http://a.example\r\n"
                            "        https://b.example:8443\r\n"
                            "log_format = JSON\r\n");
    load_ok(&c, ARGV("-c", file), NOENV);
    assert_string_equal(c.listen.host, "::");
    assert_int_equal(c.listen.port, 9090);
    assert_string_equal(c.cache_dir, "/var/cache/edge cache");
    assert_int_equal(c.stall_timeout_ms, 120000);
    assert_int_equal(c.n_allow, 2);
    assert_allow(&c.allow[1], "https", "b.example", 8443);
    assert_int_equal(c.log_format, CFG_LOG_JSON);
    cfg_free(&c);
}

/* ---- parse helpers ---------------------------------------------------- */

static void test_parse_size(void **state)
{
    static const struct { const char *in; uint64_t want; } good[] = {
        { "0", 0 }, { "512", 512 }, { "100B", 100 }, { "1K", 1024 }, { "1k", 1024 },
        { "1KB", 1024 }, { "1KiB", 1024 }, { "1kib", 1024 }, { "2m", 2u << 20 },
        { "500M", 500ull << 20 }, { "20G", 20ull << 30 }, { "3T", 3ull << 40 },
        { "16777215T", 16777215ull << 40 },
    };
    static const char *const bad[] = {
        "", "abc", "1X", "1iB", "-1", "1.5G", "1KBB", " 1K", "1 K", "K",
        "99999999999999999999", "16777216T",
    };
    char err[ERRLEN];
    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t v = 1;
        if (cfg_parse_size(good[i].in, &v, err, sizeof err) != 0)
            fail_msg("'%s' refused: %s", good[i].in, err);
        assert_int_equal(v, good[i].want);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v;
        err[0] = '\0';
        if (cfg_parse_size(bad[i], &v, err, sizeof err) == 0)
            fail_msg("'%s' accepted as a size", bad[i]);
        assert_contains(err, bad[i]);
    }
}

static void test_parse_duration(void **state)
{
    static const struct { const char *in; uint64_t want; } good[] = {
        { "500ms", 500 }, { "10s", 10000 }, { "2m", 120000 }, { "1h", 3600000 }, { "7d", 604800000 },
        { "7", 7000 }, { "0", 0 }, { "10S", 10000 },
    };
    static const char *const bad[] = {
        "", "s", "10x", "1.5s", "-1s", "10 s", "ms", "18446744073709551615s",
    };
    char err[ERRLEN];
    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t v = 1;
        if (cfg_parse_duration_ms(good[i].in, &v, err, sizeof err) != 0)
            fail_msg("'%s' refused: %s", good[i].in, err);
        assert_int_equal(v, good[i].want);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v;
        if (cfg_parse_duration_ms(bad[i], &v, err, sizeof err) == 0)
            fail_msg("'%s' accepted as a duration", bad[i]);
        assert_contains(err, bad[i]);
    }
}

static void test_parse_listen(void **state)
{
    static const struct { const char *in, *host; unsigned port; } good[] = {
        { "0.0.0.0:8080", "0.0.0.0", 8080 }, { "[::]:8080", "::", 8080 },
        { "[::1]:1", "::1", 1 }, { "localhost:65535", "localhost", 65535 },
        { "gw-1.factory.local:80", "gw-1.factory.local", 80 }, { ":9000", "0.0.0.0", 9000 },
        { "[fe80::1]:443", "fe80::1", 443 },
    };
    static const char *const bad[] = {
        "0.0.0.0:0", "0.0.0.0:65536", "host:", "host", "8080", "::1:8080", "[::1]8080",
        "[::1]", "[zz]:80", "300.1.1.1:80", "bad host:80", "0.0.0.0:80x", "0.0.0.0:-1",
        "a..b:80", "",
    };
    char err[ERRLEN];
    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct cfg_listen l;
        if (cfg_parse_listen(good[i].in, &l, err, sizeof err) != 0)
            fail_msg("'%s' refused: %s", good[i].in, err);
        assert_string_equal(l.host, good[i].host);
        assert_int_equal(l.port, good[i].port);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cfg_listen l;
        if (cfg_parse_listen(bad[i], &l, err, sizeof err) == 0)
            fail_msg("'%s' accepted as a listen address", bad[i]);
        assert_contains(err, bad[i]);
    }
    assert_int_equal(cfg_parse_listen("1.2.3.4:0", &(struct cfg_listen){ 0 }, err, sizeof err), -1);
    assert_contains(err, "port must be 1..65535");
    assert_int_equal(cfg_parse_listen("::1:80", &(struct cfg_listen){ 0 }, err, sizeof err), -1);
    assert_contains(err, "[::1]:8080");
}

static void test_parse_allow(void **state)
{
    static const struct { const char *in, *scheme, *host; unsigned port; } good[] = {
        { "http://*.dl.adu.microsoft.com", "http", "*.dl.adu.microsoft.com", 80 },
        { "https://*.blob.core.windows.net", "https", "*.blob.core.windows.net", 443 },
        { "HTTPS://Example.COM", "https", "example.com", 443 },
        { "http://127.0.0.1:9000", "http", "127.0.0.1", 9000 },
        { "http://[::1]:9000", "http", "[::1]", 9000 },
        { "https://[FE80::1]", "https", "[fe80::1]", 443 },
        { "http://deb.debian.org/", "http", "deb.debian.org", 80 },
        { "https://mirror.example:80", "https", "mirror.example", 80 },
    };
    static const struct { const char *in, *why; } bad[] = {
        { "ftp://x.example", "scheme must be http or https" },
        { "example.com", "SCHEME://HOST" },
        { "http://", "host is empty" },
        { "http://*.", "host is empty" },
        { "http://:80", "host is empty" },
        { "http://*", "not a host name" },
        { "http://a.*.com", "not a host name" },
        { "http://user@host.example", "user info" },
        { "http://user:pw@host.example:80", "user info" },
        { "http://host.example/path", "not a path" },
        { "http://host.example?x=1", "not a path" },
        { "http://host.example:0", "port must be 1..65535" },
        { "http://host.example:99999", "port must be 1..65535" },
        { "http://host.example:abc", "port must be 1..65535" },
        { "http://host.example:", "port must be 1..65535" },
        { "http://[::1", "not a host name" },
        { "http://bad_host!.example", "not a host name" },
    };
    char err[ERRLEN];
    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct cfg_allow a;
        if (cfg_parse_allow(good[i].in, &a, err, sizeof err) != 0)
            fail_msg("'%s' refused: %s", good[i].in, err);
        assert_allow(&a, good[i].scheme, good[i].host, good[i].port);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cfg_allow a;
        if (cfg_parse_allow(bad[i].in, &a, err, sizeof err) == 0)
            fail_msg("'%s' accepted as an allow entry", bad[i].in);
        assert_contains(err, bad[i].in);
        assert_contains(err, bad[i].why);
    }
}

static void test_routes(void **state)
{
    static const char *const bad[] = {
        "debian/=http://deb.example/debian/", "/debian=http://deb.example/debian/",
        "/d/=ftp://deb.example/", "/d/=http://deb.example/debian", "/d/",
        "=http://deb.example/", "/d/=deb.example/", "/d/=http:///", "/d/=http://x.example/?a=/",
    };
    struct cfg c;
    char err[ERRLEN];
    (void)state;
    load_ok(&c, ARGV("--route", "/debian/=http://deb.debian.org/debian/ /fw/=https://fw.example:8443/a/b/"),
            NOENV);
    assert_int_equal(c.n_routes, 2);
    assert_string_equal(c.routes[1].prefix, "/fw/");
    assert_string_equal(c.routes[1].url, "https://fw.example:8443/a/b/");
    cfg_free(&c);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        load_err(ARGV("--route", (char *)bad[i]), NOENV, err);
        assert_contains(err, "command line --route: route: '");
        assert_contains(err, bad[i]);
    }
}

static void test_enums_and_numbers(void **state)
{
    struct cfg c;
    char err[ERRLEN];
    (void)state;
    load_ok(&c, ARGV("--log-level", "warn", "--log-format=json", "--max-connections", "100000",
                     "--connect-timeout", "100ms", "--node-id", "l3-gw.plant_7"),
            NOENV);
    assert_int_equal(c.log_level, CFG_LOG_WARN);
    assert_int_equal(c.log_format, CFG_LOG_JSON);
    assert_int_equal(c.max_connections, 100000);
    assert_int_equal(c.connect_timeout_ms, 100);
    assert_string_equal(c.node_id, "l3-gw.plant_7");
    cfg_free(&c);

    load_err(ARGV("--log-level", "loud"), NOENV, err);
    assert_string_equal(err, "command line --log-level: log_level: 'loud' is not one of "
                             "error, warn, info, debug");
    load_err(ARGV("--connect-timeout", "99ms"), NOENV, err);
    assert_contains(err, "'99ms' is out of range (100ms..10m)");
    load_err(ARGV("--max-connections", "1e3"), NOENV, err);
    assert_contains(err, "'1e3' is not a whole number");
    load_err(ARGV("--node-id", "has space"), NOENV, err);
    assert_contains(err, "node_id: 'has space' is not a name");
    load_err(ARGV("--cache-dir="), NOENV, err);
    assert_contains(err, "cache_dir: the path must not be empty");
}

/* ---- errors ----------------------------------------------------------- */

static void test_file_errors(void **state)
{
    static const struct { const char *text, *line, *want; } cases[] = {
        { "listen = 0.0.0.0:8080\ncache_dri = /x\n", ":2: ",
          "unknown key 'cache_dri' (did you mean cache_dir?)" },
        { "\n\nmax_connections = lots\n", ":3: ", "max_connections: 'lots' is not a whole number" },
        { "stall_timeout = 0\n", ":1: ", "stall_timeout: '0' is out of range (1s..1h)" },
        { "max_connections = 100001\n", ":1: ",
          "max_connections: '100001' is out of range (1..100000 connections)" },
        { "[edgecache]\nlisten = :80\n[server]\nport = 1\n", ":3: ", "unknown section [server]" },
        { "[server]\n", ":1: ", "unknown section [server]" },
        { "listen = 0.0.0.0:8080\njust some words\n", ":2: ", "expected `name = value`" },
        { "just some words\ncache_dri = 1\n", ":1: ", "expected `name = value`" },
        { "cache_dri = 1\njust some words\n", ":1: ", "unknown key 'cache_dri'" },
        { "[edgecache\n", ":1: ", "expected `name = value`" },
        { "allow = http://ok.example ftp://bad.example\n", ":1: ",
          "allow: 'ftp://bad.example': the scheme must be http or https" },
        { "listen = \"[::1]:0\"\n", ":1: ", "listen: '[::1]:0': the port must be 1..65535" },
        { "cache_dir =\n", ":1: ", "cache_dir: the path must not be empty" },
        { "allow = http://a.example, http://a.example, http://a.example, http://a.example, "
          "http://a.example, http://a.example, http://a.example, http://a.example, "
          "http://a.example, http://a.example, http://a.example\n", ":1: ",
          "the line is longer than 197 characters" },
    };
    struct fx *fx = *state;
    char err[ERRLEN], want[PATH_MAX + 64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu.conf", i);
        char *path = write_file(fx, name, cases[i].text);
        load_err(ARGV("-c", path), NOENV, err);
        snprintf(want, sizeof want, "%s%s%s", path, cases[i].line, cases[i].want);
        if (strncmp(err, want, strlen(want)) != 0)
            fail_msg("case %zu: expected \"%s...\", got \"%s\"", i, want, err);
        unlink(path);   /* reuse the slot: MAX_FILES is small */
        fx->n_files--;
    }
    /* the message quoted in cfg.h, exactly */
    char *path = write_file(fx, "exact.conf", "stall_timeout = 0\n");
    load_err(ARGV("-c", path), NOENV, err);
    snprintf(want, sizeof want, "%s:1: stall_timeout: '0' is out of range (1s..1h)", path);
    assert_string_equal(err, want);

    snprintf(want, sizeof want, "%s/missing.conf", fx->dir);
    load_err(ARGV("--config", want), NOENV, err);
    assert_contains(err, want);
    assert_contains(err, "cannot open the config file");
}

/* Writes len bytes (NULs included) to a file in the test's directory. */
static char *write_bytes(struct fx *fx, const char *name, const char *bytes, size_t len)
{
    char *path = write_file(fx, name, "");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* A NUL byte is an error naming the file and its line, however long the
 * line: "#" + 198 NULs + "cache_dir = /x" used to be read as two lines, a
 * comment and a setting (found by fuzz_config). */
static void test_file_nul_byte(void **state)
{
    struct fx *fx = *state;
    char err[ERRLEN], want[PATH_MAX + 64], buf[1024];
    struct { const char *before; size_t nuls; const char *after; const char *line; } cases[] = {
        { "#", 198, "cache_dir = /x\n", ":1: " },
        { "cache_dir = /x", 1, "\n", ":1: " },
        { "log_level = info\n\ncache_dir = /x", 1, "y\n", ":3: " },
        { "# a comment\n", 1, "\n", ":2: " },
        { "log_level = info\n#", 300, "\ncache_dir = /x\n", ":2: " },
        { "log_level = info\n", 1, "", ":2: " },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = 0;
        memcpy(buf, cases[i].before, strlen(cases[i].before));
        n += strlen(cases[i].before);
        memset(buf + n, 0, cases[i].nuls);
        n += cases[i].nuls;
        memcpy(buf + n, cases[i].after, strlen(cases[i].after));
        n += strlen(cases[i].after);
        char *path = write_bytes(fx, "nul.conf", buf, n);
        load_err(ARGV("-c", path), NOENV, err);
        snprintf(want, sizeof want, "%s%s", path, cases[i].line);
        if (strncmp(err, want, strlen(want)) != 0 || !strstr(err, "contains a NUL byte"))
            fail_msg("case %zu: expected \"%s... contains a NUL byte...\", got \"%s\"", i,
                     want, err);
        unlink(path);
        fx->n_files--;
    }
    /* An over-long line is refused, NULs or not, and the lines after it
     * are not read (no setting from the rest of the line). */
    memset(buf, 'x', 300);
    buf[0] = '#';
    memcpy(buf + 300, "\ncache_dir = /x\n", 16);
    char *path = write_bytes(fx, "long.conf", buf, 316);
    load_err(ARGV("-c", path), NOENV, err);
    snprintf(want, sizeof want, "%s:1: the line is longer than", path);
    assert_contains(err, want);
    /* a last line that fills inih's buffer (199 characters, no newline) still loads */
    struct cfg c;
    memset(buf, ' ', 199);
    memcpy(buf, "cache_dir = /x", 14);
    path = write_bytes(fx, "edge.conf", buf, 199);
    load_ok(&c, ARGV("-c", path), NOENV);
    assert_string_equal(c.cache_dir, "/x");
    cfg_free(&c);
}

static void test_env_errors(void **state)
{
    struct fx *fx = *state;
    char err[ERRLEN], var[PATH_MAX + 32];
    load_err(ARGV0, ENV("EDGECACHE_STALL_TIMEOUT=0"), err);
    assert_string_equal(err, "environment EDGECACHE_STALL_TIMEOUT: stall_timeout: '0' is "
                             "out of range (1s..1h)");
    load_err(ARGV0, ENV("EDGECACHE_CACHEDIR=/x"), err);
    assert_string_equal(err, "environment EDGECACHE_CACHEDIR: unknown option "
                             "(did you mean EDGECACHE_CACHE_DIR?)");
    load_err(ARGV0, ENV("EDGECACHE_cache_dir=/x"), err);
    assert_contains(err, "environment EDGECACHE_cache_dir: unknown option");
    load_err(ARGV0, ENV("EDGECACHE_ALLOW=http://ok.example http://bad.example/x"), err);
    assert_contains(err, "environment EDGECACHE_ALLOW: allow: 'http://bad.example/x'");
    snprintf(var, sizeof var, "EDGECACHE_CONFIG=%s/none.conf", fx->dir);
    load_err(ARGV0, ENV(var), err);
    assert_contains(err, "none.conf: cannot open the config file");
    /* other variables are not edgecache's business */
    struct cfg c;
    load_ok(&c, ARGV0, ENV("PATH=/bin", "EDGECACHEX=1", "LANG=C.UTF-8"));
    cfg_free(&c);
}

static void test_argv_errors(void **state)
{
    char err[ERRLEN];
    (void)state;
    load_err(ARGV("--bogus"), NOENV, err);
    assert_string_equal(err, "command line: unknown argument '--bogus' (see --help)");
    load_err(ARGV("--cachedir", "/x"), NOENV, err);
    assert_contains(err, "'--cachedir' (did you mean --cache-dir?)");
    load_err(ARGV("serve"), NOENV, err);
    assert_contains(err, "unknown argument 'serve'");
    load_err(ARGV("--cache-dir"), NOENV, err);
    assert_string_equal(err, "command line --cache-dir: missing value (DIR)");
    load_err(ARGV("--cache-dir", "--listen", ":80"), NOENV, err);
    assert_contains(err, "--cache-dir: missing value");
    load_err(ARGV("-c"), NOENV, err);
    assert_contains(err, "-c: missing value (FILE)");
    load_err(ARGV("--max-connections", "0"), NOENV, err);
    assert_string_equal(err, "command line --max-connections: max_connections: '0' is out "
                             "of range (1..100000 connections)");
    load_err(ARGV("--listen=[::1]:0"), NOENV, err);
    assert_contains(err, "command line --listen: listen: '[::1]:0'");
    load_err(ARGV("--version=2"), NOENV, err);
    assert_contains(err, "--version: takes no value");
}

static void test_admin_token(void **state)
{
    static const struct { const char *listen; const char *token; bool ok; } cases[] = {
        { "127.0.0.1:8081", "", true }, { "127.9.9.9:1", "", true },
        { "[::1]:8081", "", true }, { "localhost:8081", "", true },
        { "[::ffff:127.0.0.1]:8081", "", true },
        { "0.0.0.0:8081", "", false }, { "[::]:8081", "", false },
        { "192.168.1.10:8081", "", false }, { "gateway.local:8081", "", false },
        { "0.0.0.0:8081", "s3cret", true },
    };
    char err[ERRLEN];
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cfg c;
        char *argv[] = { "edgecache", "--admin-listen", (char *)cases[i].listen,
                         "--admin-token", (char *)cases[i].token, NULL };
        enum cfg_result r = load(&c, argv, NOENV, err);
        if (r != (cases[i].ok ? CFG_OK : CFG_ERROR))
            fail_msg("admin_listen %s, token '%s': got %d (%s)", cases[i].listen,
                     cases[i].token, r, err);
        if (!cases[i].ok) {
            assert_contains(err, "admin_token");
            assert_contains(err, cases[i].listen);
        }
        cfg_free(&c);
    }
    load_err(ARGV0, ENV("EDGECACHE_ADMIN_LISTEN=0.0.0.0:8081"), err);
    assert_contains(err, "admin_token: required");
}

/* ---- --help, --version, reference, example ---------------------------- */

static void test_help(void **state)
{
    static const char *const expected[] = {
        "Usage: edgecache [OPTION]...\n",
        "  -c, --config FILE\n", "  -h, --help\n", "  -V, --version\n", "  --help-markdown\n",
        "  --listen HOST:PORT\n", "  --admin-listen HOST:PORT\n", "  --admin-token TOKEN\n",
        "  --cache-dir DIR\n", "  --allow URL\n", "  --route PREFIX=URL\n",
        "  --node-id NAME\n", "  --connect-timeout DURATION\n", "  --stall-timeout DURATION\n",
        "  --max-connections N\n", "  --log-level LEVEL\n", "  --log-format FORMAT\n",
        "(default ./edgecache-data)", "(default 10s; range 100ms..10m)",
        "(default 1024; range 1..100000 connections)", "(default the host name)",
        "one of error, warn, info, debug", "`name = value`", "EDGECACHE_NAME",
    };
    char *text = NULL;
    (void)state;
    assert_int_equal(load_capture(ARGV("--help"), NOENV, &text), CFG_EXIT);
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        assert_contains(text, expected[i]);
    free(text);

    /* -h works even when the rest of the configuration is wrong */
    assert_int_equal(load_capture(ARGV("--listen", "nonsense", "-h"),
                                  ENV("EDGECACHE_STALL_TIMEOUT=0"), &text), CFG_EXIT);
    assert_contains(text, "Usage: edgecache");
    free(text);
}

static void test_version(void **state)
{
    char *text = NULL;
    (void)state;
    assert_int_equal(load_capture(ARGV("--version"), NOENV, &text), CFG_EXIT);
    assert_string_equal(text, "edgecache " EDGECACHE_VERSION "\n");
    free(text);
    assert_int_equal(load_capture(ARGV("-V"), NOENV, &text), CFG_EXIT);
    assert_string_equal(text, "edgecache " EDGECACHE_VERSION "\n");
    free(text);
}

static const char *const all_keys[] = {
    "listen", "admin_listen", "admin_token", "admin_token_file", "metrics_public", "cache_dir", "cache_size", "allow", "immutable",
    "refresh", "max_redirects", "heuristic_max_age", "stale_if_error", "route", "node_id",
    "peers", "peer_replicas", "parent", "parent_fallback_to_origin", "parent_admin_url", "parent_admin_token",
    "advertise_url", "connect_timeout", "stall_timeout", "resume_attempts", "require_verified",
    "prefetch_concurrency", "manifest_max_bytes", "workers", "max_connections", "client_timeout",
    "header_timeout", "shutdown_grace", "log_level", "log_format",
};
#define N_KEYS (sizeof all_keys / sizeof all_keys[0])

static void test_markdown(void **state)
{
    char *text = capture(cfg_print_markdown), *again = capture(cfg_print_markdown);
    char *flag_text = NULL, host[256] = "";
    (void)state;
    assert_string_equal(text, again);
    static const char header[] = "| key | environment | flag | default | meaning |\n"
                                 "|---|---|---|---|---|\n";
    assert_int_equal(strncmp(text, header, strlen(header)), 0);
    for (size_t i = 0; i < N_KEYS; i++) {
        char row[256], env[64], flag[64];
        size_t j;
        snprintf(env, sizeof env, "EDGECACHE_%s", all_keys[i]);
        snprintf(flag, sizeof flag, "--%s", all_keys[i]);
        for (j = 0; env[j]; j++)
            env[j] = (char)((env[j] >= 'a' && env[j] <= 'z') ? env[j] - 'a' + 'A' : env[j]);
        for (j = 0; flag[j]; j++)
            flag[j] = flag[j] == '_' ? '-' : flag[j];
        snprintf(row, sizeof row, "| `%s` | `%s` | `%s ", all_keys[i], env, flag);
        assert_contains(text, row);
    }
    size_t rows = 0;
    for (const char *p = text; (p = strstr(p, "\n| `")) != NULL; p++)
        rows++;
    assert_int_equal(rows, N_KEYS);
    assert_contains(text, "| `connect_timeout` | `EDGECACHE_CONNECT_TIMEOUT` | "
                          "`--connect-timeout DURATION` | `10s` | time allowed to connect to "
                          "an upstream; range 100ms..10m |");
    assert_contains(text, "| the host name |");
    assert_contains(text, "| `admin_token` | `EDGECACHE_ADMIN_TOKEN` | `--admin-token TOKEN` | empty |");
    assert_contains(text, "| `route` | `EDGECACHE_ROUTE` | `--route PREFIX=URL` | none |");
    assert_int_equal(gethostname(host, sizeof host - 1), 0);
    char host_cell[300];
    snprintf(host_cell, sizeof host_cell, "| `%s` |", host);
    assert_null(strstr(text, host_cell));

    assert_int_equal(load_capture(ARGV("--help-markdown"), NOENV, &flag_text), CFG_EXIT);
    assert_string_equal(flag_text, text);
    free(flag_text);
    free(text);
    free(again);
}

/* The example file in the source tree: found from this file's path (absolute
 * in a CMake build), else from EDGECACHE_TEST_DATA (the tree's tests/data),
 * else relative to the current directory. */
static void example_path(char *buf, size_t len)
{
    const char *data = getenv("EDGECACHE_TEST_DATA");
    const char *self = __FILE__, *tail = strstr(self, "tests/unit/test_cfg.c");
    if (self[0] != '/' && data)
        snprintf(buf, len, "%s/../../config/edgecache.conf.example", data);
    else
        snprintf(buf, len, "%.*sconfig/edgecache.conf.example",
                 tail ? (int)(tail - self) : 0, self);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *text = NULL;
    size_t len = 0;
    if (!f)
        fail_msg("cannot open %s", path);
    FILE *out = open_memstream(&text, &len);
    int ch;
    while ((ch = getc(f)) != EOF)
        putc(ch, out);
    fclose(f);
    fclose(out);
    return text;
}

/* "#stall_timeout = 30s": a commented-out setting that has a value. */
static bool is_example_setting(const char *line, size_t n)
{
    const char *eq = memchr(line, '=', n);
    return n > 2 && line[0] == '#' && line[1] >= 'a' && line[1] <= 'z' && eq &&
           (size_t)(eq - line) + 2 < n && eq[-1] == ' ' && eq[1] == ' ';
}

/* admin_token_file: the token comes from a file (a container secret). */
static void test_admin_token_file(void **state)
{
    struct fx *fx = *state;
    struct cfg c;
    char err[ERRLEN];
    char *tok = write_file(fx, "token", "s3cret-token\n");
    load_ok(&c, ARGV("--admin-token-file", tok, "--admin-listen", "0.0.0.0:8081"), NOENV);
    assert_string_equal(c.admin_token, "s3cret-token");
    cfg_free(&c);
    load_err(ARGV("--admin-token-file", tok, "--admin-token", "x"), NOENV, err);
    assert_contains(err, "admin_token_file");
    load_err(ARGV("--admin-token-file", "/nonexistent/token"), NOENV, err);
    assert_contains(err, "admin_token_file: cannot read /nonexistent/token");
    load_err(ARGV("--admin-token-file", write_file(fx, "empty", "\n")), NOENV, err);
    assert_contains(err, "holds no token");
}

/* On IoT Edge the node id defaults to the device and module ids, which
 * outlive the container; an explicit node_id wins. */
static void test_iotedge_node_id(void **state)
{
    struct cfg c;
    (void)state;
    load_ok(&c, ARGV0, ENV("IOTEDGE_DEVICEID=plant-4 gw/1", "IOTEDGE_MODULEID=edgecache"));
    assert_string_equal(c.node_id, "plant-4-gw-1.edgecache");
    cfg_free(&c);
    load_ok(&c, ARGV("--node-id", "l3"), ENV("IOTEDGE_DEVICEID=plant-4"));
    assert_string_equal(c.node_id, "l3");
    cfg_free(&c);
}

/* Credentials in URLs never reach a log line. */
static void test_log_redacts_credentials(void **state)
{
    char out[512];
    (void)state;
    log_redact("GET http://a.blob.core.windows.net/c/f?sv=2021&sig=abc%2Bdef&se=1 done", out,
               sizeof out);
    assert_string_equal(out, "GET http://a.blob.core.windows.net/c/f?sv=2021&sig=REDACTED&se=1 done");
    log_redact("/x?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=ff00&X-Amz-Date=1&SIG=q", out,
               sizeof out);
    assert_string_equal(out, "/x?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED"
                             "&X-Amz-Date=1&SIG=REDACTED");
    log_redact("\"url\": \"http://h/f?token=t0k\"", out, sizeof out);
    assert_string_equal(out, "\"url\": \"http://h/f?token=REDACTED\"");
    /* a name that only ends like one, and a value-less one, are left alone */
    log_redact("/f?mysig=1&sig=&design=2", out, sizeof out);
    assert_string_equal(out, "/f?mysig=1&sig=&design=2");
    char *d = log_redact_dup("?sig=a&sig=b&sig=c&sig=d&sig=e&sig=f&sig=g&sig=h&sig=i&sig=j");
    assert_string_equal(d, "?sig=REDACTED&sig=REDACTED&sig=REDACTED&sig=REDACTED&sig=REDACTED"
                           "&sig=REDACTED&sig=REDACTED&sig=REDACTED&sig=REDACTED&sig=REDACTED");
    free(d);
}

static void test_example_file(void **state)
{
    struct fx *fx = *state;
    char path[PATH_MAX];
    char *text = capture(cfg_print_example);
    example_path(path, sizeof path);
    char *file = slurp(path);
    if (strcmp(text, file) != 0)
        fail_msg("%s differs from cfg_print_example(); regenerate it with "
                 "`edgecache --help-config > config/edgecache.conf.example`", path);
    for (size_t i = 0; i < N_KEYS; i++) {
        char line[64];
        snprintf(line, sizeof line, "\n#%s =", all_keys[i]);
        assert_contains(text, line);
    }

    /* every default the example shows loads, and gives the built-in defaults */
    char *uncommented = calloc(1, strlen(text) + 1), *o = uncommented;
    for (const char *p = text; *p;) {
        const char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p + 1) : strlen(p);
        bool skip = is_example_setting(p, n);
        memcpy(o, p + skip, n - skip);
        o += n - skip;
        p += n;
    }
    struct cfg from_file, defaults;
    load_ok(&from_file, ARGV("-c", write_file(fx, "example.conf", uncommented)), NOENV);
    load_ok(&defaults, ARGV0, NOENV);
    assert_string_equal(from_file.listen.host, defaults.listen.host);
    assert_string_equal(from_file.cache_dir, defaults.cache_dir);
    assert_int_equal(from_file.n_allow, defaults.n_allow);
    assert_string_equal(from_file.allow[1].host, defaults.allow[1].host);
    assert_int_equal(from_file.stall_timeout_ms, defaults.stall_timeout_ms);
    assert_int_equal(from_file.log_level, defaults.log_level);
    assert_non_null(strstr(uncommented, "\nstall_timeout = 30s\n"));
    cfg_free(&from_file);
    cfg_free(&defaults);
    free(uncommented);
    free(file);
    free(text);
}

static void test_cfg_free_leaves_nothing(void **state)
{
    struct fx *fx = *state;
    struct cfg c;
    char *file = write_file(fx, "full.conf",
                            "allow = http://a.example https://b.example\n"
                            "route = /a/=http://a.example/ /b/=http://b.example/b/\n"
                            "admin_token = t\n");
    /* replaced lists at every level must not leak (run under ASan) */
    load_ok(&c, ARGV("-c", file, "--route", "/c/=http://c.example/", "--allow", "http://c.example"),
            ENV("EDGECACHE_ROUTE=/e/=http://e.example/", "EDGECACHE_ALLOW=http://e.example"));
    assert_int_equal(c.n_routes, 1);
    assert_string_equal(c.routes[0].prefix, "/c/");
    cfg_free(&c);
    assert_null(c.routes);
    assert_null(c.allow);
    assert_null(c.cache_dir);
    assert_null(c.config_file);
    assert_int_equal(c.n_routes, 0);
    cfg_free(&c);   /* twice is harmless */
    cfg_free(NULL);
}

/* ---- logger ----------------------------------------------------------- */

static char *log_to_file(struct fx *fx, const char *name, struct logger *l)
{
    char *path = write_file(fx, name, "");
    l->fd = open(path, O_WRONLY | O_APPEND);
    assert_true(l->fd >= 0);
    return path;
}

static bool matches(const char *pattern, const char *s)
{
    regex_t re;
    assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    bool ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

#define TS_RE "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"

static void test_log_text(void **state)
{
    struct fx *fx = *state;
    struct logger l;
    log_init(&l, CFG_LOG_INFO, CFG_LOG_TEXT);
    assert_int_equal(l.fd, 2);
    char *path = log_to_file(fx, "text.log", &l);
    log_msg(&l, LOG_WARN, "fill", "upstream %s answered %d", "http://o.example/a\nb", 404);
    log_msg(&l, LOG_DEBUG, "fill", "not shown at info");
    log_msg(&l, LOG_ERROR, "store", "tab\there");
    close(l.fd);
    char *text = slurp(path);
    if (!matches("^" TS_RE " warn fill: upstream http://o\\.example/a\\\\nb answered 404\n"
                 TS_RE " error store: tab\\\\there\n$", text))
        fail_msg("unexpected log text: %s", text);
    free(text);
}

static void test_log_json(void **state)
{
    struct fx *fx = *state;
    struct logger l;
    json_error_t jerr;
    log_init(&l, CFG_LOG_DEBUG, CFG_LOG_JSON);
    char *path = log_to_file(fx, "json.log", &l);
    log_msg(&l, LOG_DEBUG, "route", "say \"hi\" \\ a\nb\tc\x01 \xff caf\xc3\xa9");
    close(l.fd);
    char *text = slurp(path);
    size_t len = strlen(text);
    assert_true(len > 0 && text[len - 1] == '\n');
    assert_ptr_equal(strchr(text, '\n'), text + len - 1);   /* one line */
    json_t *obj = json_loads(text, 0, &jerr);
    if (!obj)
        fail_msg("not JSON (%s): %s", jerr.text, text);
    assert_true(matches("^" TS_RE "$", json_string_value(json_object_get(obj, "ts"))));
    assert_string_equal(json_string_value(json_object_get(obj, "level")), "debug");
    assert_string_equal(json_string_value(json_object_get(obj, "area")), "route");
    assert_string_equal(json_string_value(json_object_get(obj, "msg")),
                        "say \"hi\" \\ a\nb\tc\x01 \xef\xbf\xbd caf\xc3\xa9");
    json_decref(obj);
    free(text);
}

static void test_log_long_line(void **state)
{
    struct fx *fx = *state;
    struct logger l;
    json_error_t jerr;
    char *big = malloc(20000);
    memset(big, '"', 19999);   /* every byte doubles when escaped */
    big[19999] = '\0';
    log_init(&l, CFG_LOG_INFO, CFG_LOG_JSON);
    char *path = log_to_file(fx, "long.log", &l);
    log_msg(&l, LOG_ERROR, "x", "%s", big);
    close(l.fd);
    char *text = slurp(path);
    assert_true(strlen(text) <= PIPE_BUF);
    json_t *obj = json_loads(text, 0, &jerr);
    if (!obj)
        fail_msg("a cut line is not JSON (%s): %.200s", jerr.text, text);
    const char *msg = json_string_value(json_object_get(obj, "msg"));
    assert_true(strlen(msg) > 1000);
    assert_string_equal(msg + strlen(msg) - strlen(" [truncated]"), " [truncated]");
    json_decref(obj);
    free(text);
    free(big);
}

static void test_log_null_logger(void **state)
{
    struct fx *fx = *state;
    struct logger l;
    char *path = log_to_file(fx, "stderr.log", &l);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_int_equal(dup2(l.fd, 2), 2);
    log_msg(NULL, LOG_DEBUG, "main", "hidden");
    log_msg(NULL, LOG_INFO, "main", "shown");
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    close(l.fd);
    char *text = slurp(path);
    if (!matches("^" TS_RE " info main: shown\n$", text))
        fail_msg("unexpected log text: %s", text);
    free(text);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_defaults), T(test_precedence_scalar), T(test_precedence_list),
        T(test_file_syntax), T(test_parse_size), T(test_parse_duration),
        T(test_parse_listen), T(test_parse_allow), T(test_routes),
        T(test_enums_and_numbers), T(test_file_errors), T(test_file_nul_byte), T(test_env_errors),
        T(test_argv_errors), T(test_admin_token), T(test_help), T(test_version),
        T(test_markdown), T(test_example_file), T(test_admin_token_file), T(test_log_redacts_credentials), T(test_iotedge_node_id), T(test_cfg_free_leaves_nothing), T(test_log_text),
        T(test_log_json), T(test_log_long_line), T(test_log_null_logger),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
