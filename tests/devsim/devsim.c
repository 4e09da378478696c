/*
 * devsim — simulates devices taking an over-the-air deployment through
 * edgecache (or any origin): each device downloads every file the
 * deployment names, verifies it as a Device Update agent or a firmware-twin
 * device does, and reports its state changes as JSON lines (see sim.h).
 * An operator can point it at a gateway to smoke-test it.
 *
 *   devsim [--devices N] [--concurrency M] [--interrupt-at PERCENT]
 *          [--timeout SECONDS] [--quiet] [--out DIR] DEPLOYMENT.json|-
 *
 * Exit status: 0 when every device succeeded, 1 when any failed, 2 for a
 * usage or input error (message on stderr).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <curl/curl.h>

#include "deploy.h"
#include "sim.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define MAX_DEVICES 100000u
#define MAX_DOCUMENT (64u << 20)

static const char usage_text[] =
    "usage: devsim [options] DEPLOYMENT.json   (- reads standard input)\n"
    "\n"
    "Simulates devices that take a deployment: an ADU deviceUpdate.service\n"
    "object (updateManifest + fileUrls) or a firmware twin (firmware.fwPackageURI).\n"
    "Each device downloads every file, checks size and SHA-256, and prints one\n"
    "JSON line per state change; a summary line ends the run.\n"
    "\n"
    "  -n, --devices N          devices to simulate (default 1)\n"
    "  -c, --concurrency M      transfers at once across all devices\n"
    "                           (default: devices x files)\n"
    "  -i, --interrupt-at PCT   drop each first GET after PCT%% of its body and\n"
    "                           resume with Range (checks 206 + Content-Range)\n"
    "  -t, --timeout SECONDS    limit per request (default: none, but a request\n"
    "                           ends after 60 s without a byte)\n"
    "  -q, --quiet              print the summary line only\n"
    "  -o, --out DIR            keep verified files in DIR/device-N/\n"
    "  -h, --help               this text\n"
    "\n"
    "Exit status: 0 every device succeeded, 1 a device failed, 2 usage or input error.\n";

struct args {
    struct sim_opts sim;
    const char *path;
};

static int usage_error(const char *fmt, const char *what)
{
    fputs("devsim: ", stderr);
    fprintf(stderr, fmt, what);
    fputs("\n(devsim --help for usage)\n", stderr);
    return EXIT_USAGE;
}

static int parse_count(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || errno || v > max || *s == '-')
        return -1;
    *out = v;
    return 0;
}

static int parse_percent(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v > 0.0 && v < 100.0))
        return -1;
    *out = v;
    return 0;
}

/* One option into a: 0, or the exit status of a usage error. */
static int parse_option(int c, const char *arg, struct args *a)
{
    unsigned long n;
    switch (c) {
    case 'n':
        if (parse_count(arg, MAX_DEVICES, &n) != 0 || n == 0)
            return usage_error("--devices wants a count from 1 to 100000, not \"%s\"", arg);
        a->sim.devices = (unsigned)n;
        return 0;
    case 'c':
        if (parse_count(arg, 1000000, &n) != 0 || n == 0)
            return usage_error("--concurrency wants a count of 1 or more, not \"%s\"", arg);
        a->sim.concurrency = (unsigned)n;
        return 0;
    case 'i':
        if (parse_percent(arg, &a->sim.interrupt_at) != 0)
            return usage_error("--interrupt-at wants a percentage above 0 and below 100, "
                               "not \"%s\"", arg);
        return 0;
    case 't':
        if (parse_count(arg, 86400, &n) != 0)
            return usage_error("--timeout wants seconds from 0 to 86400, not \"%s\"", arg);
        a->sim.timeout = (long)n;
        return 0;
    case 'q':
        a->sim.quiet = true;
        return 0;
    case 'o':
        a->sim.out_dir = arg;
        return 0;
    default:
        return usage_error("%s", "unknown option");
    }
}

/* Fills a from argv: 0, -1 after --help, or the exit status of an error. */
static int parse_args(int argc, char **argv, struct args *a)
{
    static const struct option longopts[] = {
        { "devices", required_argument, NULL, 'n' },
        { "concurrency", required_argument, NULL, 'c' },
        { "interrupt-at", required_argument, NULL, 'i' },
        { "timeout", required_argument, NULL, 't' },
        { "quiet", no_argument, NULL, 'q' },
        { "out", required_argument, NULL, 'o' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    memset(a, 0, sizeof *a);
    a->sim.devices = 1;
    int c, rc;
    while ((c = getopt_long(argc, argv, "n:c:i:t:qo:h", longopts, NULL)) != -1) {
        if (c == 'h') {
            fputs(usage_text, stdout);
            return -1;
        }
        if (c == '?')
            return usage_error("%s", "bad option");
        if ((rc = parse_option(c, optarg, a)) != 0)
            return rc;
    }
    if (optind != argc - 1)
        return usage_error("%s", "give one deployment document (a file, or - for stdin)");
    a->path = argv[optind];
    return 0;
}

/* Reads all of f (at most MAX_DOCUMENT bytes) into a new buffer. */
static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap || ferror(f))
            break;
        char *grown = cap < MAX_DOCUMENT ? realloc(buf, cap * 2) : NULL;
        if (!grown) {
            free(buf);
            return NULL;
        }
        buf = grown;
        cap *= 2;
    }
    if (buf && ferror(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static char *read_document(const char *path, size_t *len)
{
    int is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "devsim: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char *text = read_all(f, len);
    if (!text)
        fprintf(stderr, "devsim: cannot read %s (over %u MiB, or a read error)\n",
                path, MAX_DOCUMENT >> 20);
    if (!is_stdin)
        fclose(f);
    return text;
}

static int load_deployment(const char *path, struct deploy *d)
{
    size_t len = 0;
    char err[512];
    char *text = read_document(path, &len);
    if (!text)
        return -1;
    int rc = deploy_parse(text, len, d, err, sizeof err);
    free(text);
    if (rc != 0)
        fprintf(stderr, "devsim: %s: %s\n", strcmp(path, "-") == 0 ? "stdin" : path, err);
    return rc;
}

static int make_out_dir(const char *dir)
{
    if (!dir || mkdir(dir, 0755) == 0 || errno == EEXIST)
        return 0;
    fprintf(stderr, "devsim: --out %s: cannot create it: %s\n", dir, strerror(errno));
    return -1;
}

static int run(const struct args *a)
{
    struct deploy d;
    struct sim_result res = { 0, 0 };
    char err[512];
    if (load_deployment(a->path, &d) != 0)
        return EXIT_USAGE;
    int rc = make_out_dir(a->sim.out_dir);
    if (rc == 0 && (rc = sim_run(&d, &a->sim, stdout, &res, err, sizeof err)) != 0)
        fprintf(stderr, "devsim: %s\n", err);
    deploy_free(&d);
    if (rc != 0)
        return EXIT_USAGE;
    return res.failed == 0 ? EXIT_SUCCESS : EXIT_FAILED;
}

int main(int argc, char **argv)
{
    struct args a;
    int rc = parse_args(argc, argv, &a);
    if (rc != 0)
        return rc < 0 ? EXIT_SUCCESS : rc;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fputs("devsim: cannot initialise libcurl\n", stderr);
        return EXIT_USAGE;
    }
    rc = run(&a);
    curl_global_cleanup();
    return rc;
}
