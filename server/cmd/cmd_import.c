/*
 * edgecache import [OPTION]... MANIFEST FILE...
 *
 * Sideloading, for a site whose updates arrive on a USB stick (DESIGN.md
 * §7): MANIFEST is a Device Update import manifest (files[] with filename,
 * sizeInBytes, hashes.sha256 in base64; a UTF-8 byte-order mark is fine).
 * Each FILE is matched to its entry by name, copied into the store while
 * its SHA-256 is computed, and kept only when size and digest match. A
 * stored blob is then served by hash to any URL whose expectation names it
 * (a manifest rewritten later, or POST /api/v1/expectations), without
 * going upstream.
 *
 * Options are the daemon's (--cache-dir, -c, EDGECACHE_*); the operands
 * follow them. Safe while the daemon runs; its /status object count
 * catches up at its next start. A progress bar goes to stderr on a
 * terminal. Exit status: 0 every file imported (or already stored), 1 a
 * file was refused, 2 it could not run.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache/digest.h"
#include "cache/index.h"
#include "cache/store.h"
#include "config/cfg.h"
#include "config/log.h"
#include "server/cmd/cmd.h"

extern char **environ;

struct entry {
    const char *name;
    int64_t size;
    char sha256[DIGEST_SHA256_HEX];
};

struct split {
    char **opts;                    /* argv[0] and the options, for cfg_load */
    int n_opts;
    char **operands;
    int n_operands;
};

/* Options (and their values) first; MANIFEST and FILEs after them or "--". */
static int split_args(int argc, char **argv, struct split *s)
{
    s->opts = calloc((size_t)argc + 1, sizeof *s->opts);
    s->operands = calloc((size_t)argc + 1, sizeof *s->operands);
    if (!s->opts || !s->operands)
        return -1;
    s->opts[s->n_opts++] = "edgecache import";
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && strcmp(argv[i], "--") != 0; i++) {
        s->opts[s->n_opts++] = argv[i];
        if (cfg_flag_takes_value(argv[i]) && i + 1 < argc)
            s->opts[s->n_opts++] = argv[++i];
    }
    if (i < argc && strcmp(argv[i], "--") == 0)
        i++;
    for (; i < argc; i++)
        s->operands[s->n_operands++] = argv[i];
    return 0;
}

static json_t *load_manifest(const char *path, char *why, size_t whylen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, whylen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    unsigned char bom[3];
    if (fread(bom, 1, 3, f) != 3 || bom[0] != 0xEF || bom[1] != 0xBB || bom[2] != 0xBF)
        rewind(f);                  /* no byte-order mark */
    json_error_t jerr;
    json_t *root = json_loadf(f, 0, &jerr);
    fclose(f);
    if (!root)
        snprintf(why, whylen, "%s: malformed JSON at line %d, column %d: %s", path, jerr.line,
                 jerr.column, jerr.text);
    return root;
}

/* files[] of an import manifest. Returns the count, or -1 with why. */
static int manifest_entries(json_t *root, struct entry **out, char *why, size_t whylen)
{
    json_t *files = json_object_get(root, "files");
    size_t n = json_array_size(files);
    if (!json_is_array(files) || n == 0) {
        snprintf(why, whylen, "the manifest has no files[] list (an import manifest is needed)");
        return -1;
    }
    struct entry *e = calloc(n, sizeof *e);
    if (!e)
        return -1;
    for (size_t i = 0; i < n; i++) {
        json_t *f = json_array_get(files, i);
        json_t *name = json_object_get(f, "filename");
        json_t *sha = json_object_get(json_object_get(f, "hashes"), "sha256");
        json_t *size = json_object_get(f, "sizeInBytes");
        unsigned char bin[DIGEST_SHA256_LEN];
        if (!name)
            name = json_object_get(f, "fileName");
        if (!json_is_string(name) || !json_is_string(sha)
            || digest_from_base64(json_string_value(sha), bin, sizeof bin) != 0) {
            snprintf(why, whylen, "files[%zu]: needs a filename and hashes.sha256 (base64)", i);
            free(e);
            return -1;
        }
        e[i].name = json_string_value(name);
        e[i].size = json_is_integer(size) ? (int64_t)json_integer_value(size) : -1;
        digest_hex(bin, sizeof bin, e[i].sha256);
    }
    *out = e;
    return (int)n;
}

static void progress(const char *name, uint64_t done, uint64_t total, int tty)
{
    if (!tty)
        return;
    int cells = total ? (int)(30 * done / total) : 30;
    fprintf(stderr, "\r%-32.32s [%.*s%*s] %3d%%", name, cells, "##############################",
            30 - cells, "", total ? (int)(100 * done / total) : 100);
    fflush(stderr);
}

/* Copies path into a temp file of the store while hashing it. */
static int copy_in(const struct store *st, const char *path, const char *label, int tty,
                   char tmp[PATH_MAX], int *fd_out, uint64_t *size,
                   char sha[DIGEST_SHA256_HEX], char *why, size_t whylen)
{
    int in = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (in < 0 || fstat(in, &sb) != 0) {
        snprintf(why, whylen, "%s: %s", path, strerror(errno));
        if (in >= 0)
            close(in);
        return -1;
    }
    int out = store_temp_create(st, tmp, PATH_MAX);
    if (out < 0) {
        snprintf(why, whylen, "cannot create a temp file in %s: %s", st->tmp_dir, strerror(errno));
        close(in);
        return -1;
    }
    struct digest d = {0};
    digest_init(&d);
    const size_t bufsize = 1 << 20;
    char *buf = malloc(bufsize);
    uint64_t done = 0;
    ssize_t n = buf ? 0 : -1;
    while (buf && (n = read(in, buf, bufsize)) > 0) {
        if (write(out, buf, (size_t)n) != n) {
            snprintf(why, whylen, "cannot write %s: %s", tmp, strerror(errno));
            n = -1;
            break;
        }
        digest_update(&d, buf, (size_t)n);
        done += (uint64_t)n;
        progress(label, done, (uint64_t)sb.st_size, tty);
    }
    free(buf);
    if (n < 0 && !why[0])
        snprintf(why, whylen, "cannot read %s: %s", path, strerror(errno));
    unsigned char bin[DIGEST_SHA256_LEN];
    digest_final(&d, bin);
    digest_free(&d);
    digest_hex(bin, sizeof bin, sha);
    close(in);
    if (tty)
        fputc('\n', stderr);
    *fd_out = out;
    *size = done;
    return n < 0 ? -1 : 0;
}

static const struct entry *find(const struct entry *e, int n, const char *path)
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", path);
    const char *base = basename(copy);
    for (int i = 0; i < n; i++)
        if (strcmp(e[i].name, base) == 0)
            return &e[i];
    return NULL;
}

/* One FILE: 0 imported (*fresh set), 1 refused. */
static int import_one(const struct store *st, struct index *idx, const struct entry *e, int n,
                      const char *path, int tty, int *fresh)
{
    char why[600] = "", tmp[PATH_MAX], sha[DIGEST_SHA256_HEX];
    uint64_t size = 0, had;
    int fd = -1;
    const struct entry *want = find(e, n, path);
    if (!want) {
        printf("%s: refused: not listed in the manifest\n", path);
        return 1;
    }
    if (copy_in(st, path, want->name, tty, tmp, &fd, &size, sha, why, sizeof why) != 0
        || (want->size >= 0 && (uint64_t)want->size != size)
        || strcmp(sha, want->sha256) != 0) {
        if (!why[0] && want->size >= 0 && (uint64_t)want->size != size)
            snprintf(why, sizeof why, "%llu bytes, the manifest says %lld",
                     (unsigned long long)size, (long long)want->size);
        else if (!why[0])
            snprintf(why, sizeof why, "sha256 %s, the manifest says %s", sha, want->sha256);
        printf("%s: refused: %s\n", path, why);
        if (fd >= 0)
            close(fd);
        store_temp_discard(st, tmp);
        return 1;
    }
    *fresh = index_object_size(idx, sha, &had) != 1;
    int rc = store_commit(st, fd, tmp, sha);
    close(fd);
    if (rc != 0 || index_import_object(idx, sha, size, (int64_t)time(NULL)) != 0) {
        printf("%s: refused: cannot store it (%s)\n", path, rc ? strerror(-rc) : "index");
        if (rc != 0)
            store_temp_discard(st, tmp);
        return 1;
    }
    printf("%s: %s %s (%llu bytes)\n", path, *fresh ? "imported as" : "already stored as", sha,
           (unsigned long long)size);
    return 0;
}

static int run_import(const struct cfg *cfg, const struct logger *log, struct split *s)
{
    char why[700] = "", ipath[PATH_MAX];
    struct store st = {0};
    struct index *idx = NULL;
    struct entry *e = NULL;
    json_t *root = load_manifest(s->operands[0], why, sizeof why);
    int n = root ? manifest_entries(root, &e, why, sizeof why) : -1;
    int rc = 2;
    if (n < 0)
        fprintf(stderr, "edgecache import: %s\n", why);
    else if (store_open(&st, cfg->cache_dir, log, why, sizeof why) != 0)
        fprintf(stderr, "edgecache import: %s\n", why);
    else {
        store_index_path(&st, ipath, sizeof ipath);
        if (index_open(&idx, ipath, log, why, sizeof why) != 0)
            fprintf(stderr, "edgecache import: %s\n", why);
        else {
            int refused = 0, fresh_n = 0, tty = isatty(STDERR_FILENO);
            for (int i = 1; i < s->n_operands; i++) {
                int fresh = 0;
                refused += import_one(&st, idx, e, n, s->operands[i], tty, &fresh);
                fresh_n += fresh;
            }
            printf("imported %d of %d files: %d new, %d already stored, %d refused\n",
                   s->n_operands - 1 - refused, s->n_operands - 1, fresh_n,
                   s->n_operands - 1 - refused - fresh_n, refused);
            rc = refused ? 1 : 0;
            index_close(&idx);
        }
        store_close(&st);
    }
    free(e);
    json_decref(root);
    return rc;
}

int cmd_import(int argc, char **argv)
{
    struct split s = {0};
    struct cfg cfg;
    struct logger log;
    char err[1024] = "";
    int rc = 2;
    if (split_args(argc, argv, &s) != 0) {
        fprintf(stderr, "edgecache import: out of memory\n");
    } else if (s.n_operands < 2) {
        fprintf(stderr, "usage: edgecache import [OPTION]... MANIFEST FILE...\n"
                        "(the options are the daemon's: --cache-dir DIR, -c FILE, ...)\n");
    } else {
        enum cfg_result cr = cfg_load(&cfg, s.n_opts, s.opts, environ, stdout, err, sizeof err);
        if (cr == CFG_OK) {
            log_init(&log, cfg.log_level, cfg.log_format);
            rc = run_import(&cfg, &log, &s);
        } else if (cr == CFG_ERROR) {
            fprintf(stderr, "edgecache import: %s\n", err);
        } else {
            rc = 0;
        }
        cfg_free(&cfg);
    }
    free(s.opts);
    free(s.operands);
    return rc;
}
