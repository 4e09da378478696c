/*
 * edgecache rewrite [--cache-url URL] [OPTION]... FILE|-
 *
 * The rewrite of POST /api/v1/rewrite (DESIGN.md §4, cache/manifest.h) as a
 * command, for a deployment pipeline that writes the manifests children
 * receive: reads FILE (standard input for "-"), writes the document with
 * every download URL pointing at URL (DO shape) to standard output, and
 * nothing else. The allow-list is the daemon's: every option other than
 * --cache-url and FILE goes to cfg_load() (config file, EDGECACHE_*
 * environment, --allow), so the same configuration refuses the same URLs.
 * Without --cache-url the URL follows the daemon's rule (route_cache_base):
 * advertise_url, else this machine's name (the listen address when it is
 * not a wildcard) with the data plane's port, with a warning on stderr when
 * that name is a loopback one while the data plane listens beyond it.
 *
 * FILE is the one argument that is neither a flag nor the value following
 * a flag; when every candidate follows a flag (a boolean switch before
 * FILE), the last argument is FILE. "--" ends the options.
 *
 * Exit status: 0 rewritten; 1 the document was refused or could not be
 * read or written (the reason on stderr); 2 usage or configuration error.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "cache/manifest.h"
#include "cache/route.h"
#include "config/cfg.h"
#include "server/cmd/cmd.h"

#define EXIT_DONE 0
#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define READ_CHUNK 65536

extern char **environ;

/* The command line once rewrite's own arguments are taken out. */
struct rewrite_args {
    const char *cache_url;
    const char *file;
    bool help;
    int argc;
    char **argv;                        /* owned array, strings borrowed */
};

/* Table of contents. */
static bool is_flag(const char *s);
static bool is_positional(const char *s);
static int pick_file(int argc, char **argv, bool *taken, struct rewrite_args *a,
                     char *why, size_t whylen);
static int split_args(int argc, char **argv, struct rewrite_args *a, char *why,
                      size_t whylen);
static void print_usage(FILE *out);
static int read_all(FILE *f, size_t max, char **buf, size_t *len);
static int read_input(const char *file, size_t max, char **buf, size_t *len);
static char *default_cache_url(const struct cfg *cfg, char *why, size_t whylen);
static int run_rewrite(const struct rewrite_args *a, const struct cfg *cfg);

int cmd_rewrite(int argc, char **argv)
{
    struct rewrite_args a = {0};
    struct cfg cfg;
    char err[1024] = "";

    if (split_args(argc, argv, &a, err, sizeof err) != 0) {
        fprintf(stderr, "edgecache rewrite: %s (see edgecache rewrite --help)\n", err);
        free(a.argv);
        return EXIT_USAGE;
    }
    if (a.help) {
        print_usage(stdout);
        free(a.argv);
        return EXIT_DONE;
    }
    enum cfg_result cr = cfg_load(&cfg, a.argc, a.argv, environ, stdout, err, sizeof err);
    if (cr != CFG_OK) {
        if (cr == CFG_ERROR)
            fprintf(stderr, "edgecache rewrite: %s\n", err);
        cfg_free(&cfg);
        free(a.argv);
        return cr == CFG_EXIT ? EXIT_DONE : EXIT_USAGE;
    }
    int rc = run_rewrite(&a, &cfg);
    cfg_free(&cfg);
    free(a.argv);
    return rc;
}

/* "--name" or "-x" without "=value": a flag that may take the next argument. */
static bool is_flag(const char *s)
{
    return s[0] == '-' && s[1] != '\0' && !strchr(s, '=');
}

static bool is_positional(const char *s)
{
    return s[0] != '-' || strcmp(s, "-") == 0;
}

/* Marks FILE in taken[] and sets a->file: the one positional argument that
 * does not follow a flag, else the last argument when it is positional.
 * 0 or -1 with a reason. */
static int pick_file(int argc, char **argv, bool *taken, struct rewrite_args *a,
                     char *why, size_t whylen)
{
    int found = -1;
    for (int i = 1; i < argc; i++) {
        if (taken[i] || !is_positional(argv[i]) || (i > 1 && !taken[i - 1] &&
                                                     is_flag(argv[i - 1])))
            continue;
        if (found >= 0) {
            snprintf(why, whylen, "more than one FILE: '%s' and '%s'", argv[found], argv[i]);
            return -1;
        }
        found = i;
    }
    if (found < 0 && argc > 1 && !taken[argc - 1] && is_positional(argv[argc - 1]))
        found = argc - 1;
    if (found < 0) {
        snprintf(why, whylen, "no FILE given (use - for standard input)");
        return -1;
    }
    taken[found] = true;
    a->file = argv[found];
    return 0;
}

/* Takes --cache-url, --help and FILE out of argv; the rest (with argv[0]
 * naming the command for cfg_load's messages) is left for cfg_load. */
static int split_args(int argc, char **argv, struct rewrite_args *a, char *why,
                      size_t whylen)
{
    static const char flag[] = "--cache-url";
    bool *taken = calloc((size_t)argc + 1, sizeof *taken);
    a->argv = calloc((size_t)argc + 1, sizeof *a->argv);
    int rc = -1;
    if (!taken || !a->argv) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            a->help = taken[i] = true;
        } else if (strcmp(argv[i], flag) == 0 && i + 1 == argc) {
            snprintf(why, whylen, "--cache-url needs a URL (e.g. http://gateway:8080)");
            goto out;
        } else if (strcmp(argv[i], flag) == 0) {
            a->cache_url = argv[i + 1];
            taken[i] = taken[i + 1] = true;
            i++;
        } else if (strncmp(argv[i], flag, sizeof flag - 1) == 0 &&
                   argv[i][sizeof flag - 1] == '=') {
            a->cache_url = argv[i] + sizeof flag;
            taken[i] = true;
        } else if (strcmp(argv[i], "--") == 0 && i + 1 < argc) {
            a->file = argv[i + 1];
            taken[i] = taken[i + 1] = true;
            i++;
        }
    }
    a->argv[a->argc++] = "edgecache rewrite";
    if (a->help) {
        rc = 0;
        goto out;
    }
    if (!a->file && pick_file(argc, argv, taken, a, why, whylen) != 0)
        goto out;
    if (a->cache_url && !a->cache_url[0]) {
        snprintf(why, whylen, "--cache-url needs a URL (e.g. http://gateway:8080)");
        goto out;
    }
    for (int i = 1; i < argc; i++)
        if (!taken[i])
            a->argv[a->argc++] = argv[i];
    rc = 0;
out:
    free(taken);
    return rc;
}

static void print_usage(FILE *out)
{
    fputs("Usage: edgecache rewrite [--cache-url URL] [OPTION]... FILE|-\n"
          "Writes FILE (a Device Update deployment, the deviceUpdate.service object, or a\n"
          "device twin with a firmware section) to standard output with every download\n"
          "URL (fileUrls, rootKeyPackageUrl, fwPackageURI) pointing at this cache in\n"
          "Delivery Optimization shape. The signed updateManifest is never changed.\n\n"
          "  --cache-url URL\n"
          "      where children reach this cache, e.g. http://gateway:8080; default:\n"
          "      advertise_url, else this machine's host name (or the listen address\n"
          "      when it names one) with the data plane's port\n"
          "  FILE\n"
          "      the JSON document; - reads standard input\n\n"
          "Every daemon option is accepted (see edgecache --help); rewrite uses the\n"
          "allow-list (--allow, EDGECACHE_ALLOW, -c FILE): a URL whose origin is not on\n"
          "it is refused, since children could not fetch it through the cache.\n\n"
          "Exit status: 0 rewritten, 1 the document was refused or unreadable,\n"
          "2 usage or configuration error.\n", out);
}

/* Reads f to its end into a malloc'd, NUL-terminated buffer of at most max
 * bytes. 0; -1 read error (errno); -2 over max. */
static int read_all(FILE *f, size_t max, char **buf, size_t *len)
{
    size_t cap = 0, n = 0;
    char *b = NULL;
    while (!feof(f) && !ferror(f)) {
        if (n == cap) {
            if (cap > max) {
                free(b);
                return -2;
            }
            cap = cap ? 2 * cap : READ_CHUNK;
            cap = cap > max + 1 ? max + 1 : cap;   /* one byte more tells "too large" */
            char *nb = realloc(b, cap + 1);
            if (!nb) {
                free(b);
                errno = ENOMEM;
                return -1;
            }
            b = nb;
        }
        n += fread(b + n, 1, cap - n, f);
    }
    if (ferror(f) || n > max) {
        free(b);
        errno = errno ? errno : EIO;
        return n > max ? -2 : -1;
    }
    b = b ? b : malloc(1);
    if (!b)
        return -1;
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
}

/* FILE or standard input; the reason printed on failure. */
static int read_input(const char *file, size_t max, char **buf, size_t *len)
{
    bool std_in = strcmp(file, "-") == 0;
    FILE *f = std_in ? stdin : fopen(file, "rb");
    if (!f) {
        fprintf(stderr, "edgecache rewrite: cannot open %s: %s\n", file, strerror(errno));
        return -1;
    }
    errno = 0;
    int rc = read_all(f, max, buf, len);
    if (rc == -1)
        fprintf(stderr, "edgecache rewrite: cannot read %s: %s\n",
                std_in ? "standard input" : file, strerror(errno));
    else if (rc == -2)
        fprintf(stderr, "edgecache rewrite: %s is over %zu bytes, too large for a "
                "manifest\n", std_in ? "standard input" : file, max);
    if (!std_in)
        fclose(f);
    return rc == 0 ? 0 : -1;
}

/* The daemon's rule for a rewrite without a URL (route_cache_base), with
 * this machine standing in for the request's Host: the listen address when
 * it names one, else the host name. malloc'd, or NULL with why. */
static char *default_cache_url(const struct cfg *cfg, char *why, size_t whylen)
{
    char name[256] = "";
    const char *lh = cfg->listen.host;
    bool wildcard = !lh[0] || strcmp(lh, "0.0.0.0") == 0 || strcmp(lh, "::") == 0;
    if (!wildcard) {
        snprintf(name, sizeof name, strchr(lh, ':') ? "[%s]" : "%s", lh);
    } else if (gethostname(name, sizeof name - 1) != 0 || !name[0]) {
        snprintf(why, whylen, "this machine has no host name: give --cache-url or set "
                 "advertise_url (config key)");
        return NULL;
    }
    int warn = 0;
    char *url = route_cache_base(cfg, name, &warn, why, whylen);
    if (url && warn)
        fprintf(stderr, "edgecache rewrite: warning: the URLs name %s, a loopback address, "
                "while the data plane listens on %s:%u: give --cache-url or set "
                "advertise_url (config key) to the URL devices reach this cache at\n",
                url, lh, cfg->listen.port);
    return url;
}

static int run_rewrite(const struct rewrite_args *a, const struct cfg *cfg)
{
    struct manifest_result res;
    struct manifest_error merr;
    char why[512] = "";
    char *body = NULL;
    size_t len = 0;
    char *url = a->cache_url ? strdup(a->cache_url) : default_cache_url(cfg, why, sizeof why);
    char *base = url ? manifest_cache_base(url, why, sizeof why) : NULL;

    if (!base) {
        fprintf(stderr, "edgecache rewrite: %s%s\n",
                a->cache_url ? "--cache-url: " : !url ? "" : "advertise_url: ", why);
        free(url);
        return EXIT_USAGE;
    }
    free(url);
    struct manifest_opts o = { .cache_base = base, .allow = manifest_allow_cfg,
                               .allow_ctx = (void *)cfg,
                               .max_bytes = MANIFEST_MAX_BYTES_DEFAULT };
    int rc = EXIT_REFUSED;
    if (read_input(a->file, MANIFEST_MAX_BYTES_DEFAULT, &body, &len) != 0)
        goto out;
    if (manifest_rewrite(body, len, &o, &res, &merr) != 0) {
        fprintf(stderr, "edgecache rewrite: %s: %s\n",
                strcmp(a->file, "-") == 0 ? "standard input" : a->file, merr.message);
        goto out;
    }
    size_t put = fwrite(res.doc, 1, res.len, stdout);
    if (put != res.len || fflush(stdout) != 0)
        fprintf(stderr, "edgecache rewrite: cannot write standard output: %s\n",
                strerror(errno));
    else
        rc = EXIT_DONE;
    manifest_result_free(&res);
out:
    free(body);
    free(base);
    return rc;
}
