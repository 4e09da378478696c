/*
 * edgecache verify [--repair] [-q|--quiet] [OPTION]...
 *
 * Rehashes every blob of the store against its name and its index rows
 * (cache/verify.h), prints one line per finding (a bad blob's line is
 * followed by one "    url: URL" line for each URL the index maps to it)
 * and a summary on stdout, and a progress bar on stderr when stderr is a
 * terminal. Its own flags are taken out of argv; everything else goes to
 * cfg_load() exactly as for the daemon (config file, EDGECACHE_*
 * environment, --cache-dir), so the same configuration verifies the store
 * the daemon uses.
 *
 * The store is opened without start-up recovery and nothing listens.
 * Checking is safe while the daemon runs; --repair is meant for a stopped
 * daemon (a running one may commit, evict or serve what repair removes).
 *
 * Exit status: 0 the store is good (nothing bad, or all of it repaired);
 * 1 bad blobs remain; 2 verify could not run (options, cache_dir, index).
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache/index.h"
#include "cache/store.h"
#include "cache/verify.h"
#include "config/cfg.h"
#include "config/log.h"
#include "server/cmd/cmd.h"

#define EXIT_GOOD 0
#define EXIT_BAD 1
#define EXIT_CANNOT_RUN 2
#define REDRAW_NS 100000000L            /* the bar is redrawn at most 10 times a second */
#define BAR_MAX 30                      /* cells of the bar itself */

extern char **environ;

/* The command line once verify's own flags are taken out. */
struct verify_args {
    bool repair;
    bool quiet;                         /* no progress bar, no notes */
    bool help;
    int argc;
    char **argv;                        /* owned array, strings borrowed */
};

/* The progress line on stderr. */
struct bar {
    bool enabled;                       /* stderr is a terminal and not --quiet */
    bool shown;                         /* a line is on screen now */
    struct timespec last;               /* when it was last drawn */
};

/* What the callbacks of one run share. */
struct verify_cmd {
    struct verify_args args;
    struct bar bar;
};

/* Table of contents. */
static int split_args(int argc, char **argv, struct verify_args *a);
static void print_usage(FILE *out);
static int check_cache_dir(const char *dir);
static int run_verify(struct verify_cmd *c, const struct cfg *cfg, const struct logger *log);
static void on_finding(void *ctx, const struct verify_finding *f);
static void on_progress(void *ctx, const struct verify_progress *p);
static bool redraw_due(struct bar *b, bool last);
static void bar_draw(struct bar *b, const struct verify_progress *p);
static void bar_clear(struct bar *b);
static void short_bytes(uint64_t n, char *out, size_t outlen);

int cmd_verify(int argc, char **argv)
{
    struct verify_cmd c = {0};
    struct cfg cfg;
    struct logger log;
    char err[1024] = "";
    int rc;

    if (split_args(argc, argv, &c.args) != 0) {
        fprintf(stderr, "edgecache verify: out of memory\n");
        return EXIT_CANNOT_RUN;
    }
    if (c.args.help) {
        print_usage(stdout);
        free(c.args.argv);
        return EXIT_GOOD;
    }
    enum cfg_result cr = cfg_load(&cfg, c.args.argc, c.args.argv, environ, stdout, err,
                                  sizeof err);
    free(c.args.argv);
    if (cr != CFG_OK) {
        if (cr == CFG_ERROR)
            fprintf(stderr, "edgecache verify: %s\n", err);
        cfg_free(&cfg);
        return cr == CFG_EXIT ? EXIT_GOOD : EXIT_CANNOT_RUN;
    }
    log_init(&log, cfg.log_level, cfg.log_format);
    c.bar.enabled = !c.args.quiet && isatty(STDERR_FILENO);
    rc = check_cache_dir(cfg.cache_dir);
    if (rc == 0)
        rc = run_verify(&c, &cfg, &log);
    cfg_free(&cfg);
    return rc;
}

/* Copies argv without --repair and --quiet/-q, with argv[0] naming the
 * command for cfg_load's messages. Returns 0, or -1 when out of memory. */
static int split_args(int argc, char **argv, struct verify_args *a)
{
    a->argv = calloc((size_t)argc + 1, sizeof *a->argv);
    if (!a->argv)
        return -1;
    a->argv[a->argc++] = "edgecache verify";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--repair") == 0)
            a->repair = true;
        else if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0)
            a->quiet = true;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            a->help = true;
        else
            a->argv[a->argc++] = argv[i];
    }
    return 0;
}

static void print_usage(FILE *out)
{
    fputs("Usage: edgecache verify [--repair] [-q|--quiet] [OPTION]...\n"
          "Rehashes every blob in the cache against its name and its index rows and\n"
          "prints what is bad, then a summary. Nothing is changed without --repair.\n\n"
          "  --repair\n"
          "      remove bad blobs and their index rows (their URLs are fetched again);\n"
          "      run it while the daemon is stopped\n"
          "  -q, --quiet\n"
          "      no progress bar and no notes, only bad blobs and the summary\n\n"
          "Every daemon option is accepted (see edgecache --help); verify uses\n"
          "--cache-dir DIR (EDGECACHE_CACHE_DIR), -c FILE, --log-level and --log-format.\n\n"
          "Exit status: 0 the store is good (or was repaired), 1 bad blobs remain,\n"
          "2 verify could not run.\n", out);
}

/* verify checks an existing store: it refuses to create one where a
 * mistyped cache_dir points. Returns 0 or EXIT_CANNOT_RUN (printed). */
static int check_cache_dir(const char *dir)
{
    char blobs[PATH_MAX], db[PATH_MAX];
    struct stat st;

    const char *why = stat(dir, &st) != 0 ? strerror(errno)
                      : !S_ISDIR(st.st_mode) ? "not a directory" : NULL;

    if (why) {
        fprintf(stderr, "edgecache verify: cache_dir %s: %s; set --cache-dir or"
                " EDGECACHE_CACHE_DIR to the daemon's cache directory\n", dir, why);
        return EXIT_CANNOT_RUN;
    }
    snprintf(blobs, sizeof blobs, "%s/blobs", dir);
    snprintf(db, sizeof db, "%s/index.db", dir);
    if (access(blobs, F_OK) != 0 && access(db, F_OK) != 0) {
        fprintf(stderr, "edgecache verify: cache_dir %s holds no edgecache store (no"
                " blobs/ and no index.db); set --cache-dir or EDGECACHE_CACHE_DIR to the"
                " daemon's cache directory\n", dir);
        return EXIT_CANNOT_RUN;
    }
    return 0;
}

/* Opens the store and index, runs the check, prints the summary. Returns
 * the exit status. */
static int run_verify(struct verify_cmd *c, const struct cfg *cfg, const struct logger *log)
{
    struct verify_options o = {.repair = c->args.repair, .on_finding = on_finding,
                               .on_progress = c->bar.enabled ? on_progress : NULL, .ctx = c};
    struct verify_report r;
    struct store s;
    struct index *idx = NULL;
    char err[1024] = "", path[PATH_MAX], summary[512];
    int rc = EXIT_CANNOT_RUN;

    if (store_open(&s, cfg->cache_dir, log, err, sizeof err) != 0) {
        fprintf(stderr, "edgecache verify: %s\n", err);
        return EXIT_CANNOT_RUN;
    }
    store_index_path(&s, path, sizeof path);
    if (index_open(&idx, path, log, err, sizeof err) != 0) {
        fprintf(stderr, "edgecache verify: %s\n", err);
    } else if (verify_run(&s, idx, &o, &r) != 0) {
        bar_clear(&c->bar);
        fprintf(stderr, "edgecache verify: could not check the store in %s (see above)\n",
                cfg->cache_dir);
    } else {
        bar_clear(&c->bar);
        verify_summary(&r, c->args.repair, summary, sizeof summary);
        printf("%s\n", summary);
        rc = verify_remaining(&r) ? EXIT_BAD : EXIT_GOOD;
    }
    index_close(&idx);
    store_close(&s);
    if (fflush(stdout) != 0 && rc == EXIT_GOOD)
        rc = EXIT_CANNOT_RUN;
    return rc;
}

/* One line on stdout per finding; the bar is taken off the terminal first
 * so the line does not land in the middle of it. */
static void on_finding(void *ctx, const struct verify_finding *f)
{
    struct verify_cmd *c = ctx;
    char line[1024];

    if (c->args.quiet && !verify_kind_is_bad(f->kind))
        return;
    bar_clear(&c->bar);
    verify_finding_line(f, line, sizeof line);
    printf("%s\n", line);
    for (const char *p = f->urls; p && *p;) {     /* what devices asked for it by */
        int n = (int)strcspn(p, "\n");
        printf("    url: %.*s\n", n, p);
        p += n + (p[n] == '\n');
    }
    fflush(stdout);
}

static void on_progress(void *ctx, const struct verify_progress *p)
{
    struct verify_cmd *c = ctx;
    bool last = p->blobs_done == p->blobs_total;

    if (redraw_due(&c->bar, last))
        bar_draw(&c->bar, p);
}

/* At most one redraw per REDRAW_NS, also after a finding took the bar
 * off the screen; the final state is always drawn. */
static bool redraw_due(struct bar *b, bool last)
{
    struct timespec now;
    long long ns;

    clock_gettime(CLOCK_MONOTONIC, &now);
    ns = (long long)(now.tv_sec - b->last.tv_sec) * 1000000000LL
         + (now.tv_nsec - b->last.tv_nsec);
    if (!last && ns < REDRAW_NS)
        return false;
    b->last = now;
    return true;
}

/* "\r[#######.......]  42%  1.2 GiB/2.9 GiB  120/300 blobs", fitted to the
 * terminal's width and written at once. */
static void bar_draw(struct bar *b, const struct verify_progress *p)
{
    char done[16], total[16], text[128], line[256];
    struct winsize ws;
    double frac = p->bytes_total ? (double)p->bytes_done / (double)p->bytes_total
                  : p->blobs_total ? (double)p->blobs_done / (double)p->blobs_total : 1.0;
    int cols = ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col ? ws.ws_col : 80;

    frac = frac > 1.0 ? 1.0 : frac;
    short_bytes(p->bytes_done, done, sizeof done);
    short_bytes(p->bytes_total, total, sizeof total);
    snprintf(text, sizeof text, " %3d%%  %s/%s  %llu/%llu blobs", (int)(frac * 100), done,
             total, (unsigned long long)p->blobs_done, (unsigned long long)p->blobs_total);
    int cells = cols - 1 - (int)strlen(text) - 2;
    cells = cells > BAR_MAX ? BAR_MAX : cells;
    int len = snprintf(line, sizeof line, "\r");
    if (cells >= 10) {
        int full = (int)(frac * cells);
        len += snprintf(line + len, sizeof line - (size_t)len, "[%.*s%.*s]", full,
                        "##############################", cells - full,
                        "..............................");
    }
    len += snprintf(line + len, sizeof line - (size_t)len, "%s\033[K", text);
    fwrite(line, 1, (size_t)len, stderr);
    fflush(stderr);
    b->shown = true;
}

static void bar_clear(struct bar *b)
{
    if (!b->shown)
        return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    b->shown = false;
}

/* "512 B", "4.0 KiB", "5.6 GiB": for the progress line. */
static void short_bytes(uint64_t n, char *out, size_t outlen)
{
    static const char units[] = "KMGTPE";
    double v = (double)n;
    int u = -1;

    while (v >= 1024 && u + 1 < (int)sizeof units - 1) {
        v /= 1024;
        u++;
    }
    if (u < 0)
        snprintf(out, outlen, "%llu B", (unsigned long long)n);
    else
        snprintf(out, outlen, "%.1f %ciB", v, units[u]);
}
