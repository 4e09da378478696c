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
 * With --admin-url URL (the daemon's control plane, e.g.
 * http://127.0.0.1:8081) the manifest and the files are uploaded to
 * POST /api/v1/import instead (multipart, streamed from the files), with
 * the token of --admin-token, EDGECACHE_ADMIN_TOKEN or the config file's
 * admin_token / admin_token_file: the running daemon checks and stores them
 * and counts them at once, and the daemon's verdict on each file is
 * printed. Without it, the store in cache_dir (which must be given: flag,
 * environment or config file) is written directly; that is safe while the
 * daemon runs, but a running daemon counts and serves the new files only
 * after its next start.
 *
 * Options are the daemon's (--cache-dir, -c, EDGECACHE_*) and --admin-url;
 * the operands follow them. A progress bar goes to stderr on a terminal.
 * Exit status: 0 every file imported (or already stored), 1 a file was
 * refused, 2 it could not run.
 */
#include <curl/curl.h>
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
#include "cache/manifest.h"
#include "cache/store.h"
#include "config/cfg.h"
#include "config/log.h"
#include "server/cmd/cmd.h"

extern char **environ;

struct split {
    char **opts;                    /* argv[0] and the options, for cfg_load */
    int n_opts;
    char **operands;
    int n_operands;
    const char *admin_url;          /* --admin-url: upload to a running daemon */
    int help;                       /* --help or -h */
};

#define ADMIN_URL_FLAG "--admin-url"

/* Options (and their values) first; MANIFEST and FILEs after them or "--".
 * --admin-url and --help are this command's; the rest go to cfg_load. */
static int split_args(int argc, char **argv, struct split *s)
{
    s->opts = calloc((size_t)argc + 1, sizeof *s->opts);
    s->operands = calloc((size_t)argc + 1, sizeof *s->operands);
    if (!s->opts || !s->operands)
        return -1;
    s->opts[s->n_opts++] = "edgecache import";
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            s->help = 1;
            continue;
        }
        if (strcmp(argv[i], ADMIN_URL_FLAG) == 0 && i + 1 < argc) {
            s->admin_url = argv[++i];
            continue;
        }
        if (strncmp(argv[i], ADMIN_URL_FLAG "=", sizeof ADMIN_URL_FLAG) == 0) {
            s->admin_url = argv[i] + sizeof ADMIN_URL_FLAG;
            continue;
        }
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

static const struct manifest_import_entry *find(const struct manifest_import_entry *e, int n, const char *path)
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
static int import_one(const struct store *st, struct index *idx, const struct manifest_import_entry *e, int n,
                      const char *path, int tty, int *fresh)
{
    char why[600] = "", tmp[PATH_MAX], sha[DIGEST_SHA256_HEX];
    uint64_t size = 0, had;
    int fd = -1;
    if (access(path, R_OK) != 0) {
        printf("cannot read %s: %s\n", path, strerror(errno));
        return 1;
    }
    const struct manifest_import_entry *want = find(e, n, path);
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
    struct manifest_import_entry *e = NULL;
    json_t *root = load_manifest(s->operands[0], why, sizeof why);
    int n = root ? manifest_import_entries(root, &e, why, sizeof why) : -1;
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
            if (fresh_n)
                printf("note: a daemon running on %s counts and serves the new files only "
                       "after a restart; --admin-url URL imports into a running one\n",
                       cfg->cache_dir);
            rc = refused ? 1 : 0;
            index_close(&idx);
        }
        store_close(&st);
    }
    free(e);
    json_decref(root);
    return rc;
}

/* ---- the upload to a running daemon (--admin-url) ------------------------------- */

#define ANSWER_MAX (4u << 20)

struct answer_buf {
    char *text;
    size_t len;
};

static size_t on_answer(char *data, size_t size, size_t nmemb, void *ctx)
{
    struct answer_buf *b = ctx;
    size_t n = size * nmemb;
    if (b->len + n > ANSWER_MAX)
        return 0;                   /* no control-plane answer is that long */
    char *grown = realloc(b->text, b->len + n + 1);
    if (!grown)
        return 0;
    memcpy(grown + b->len, data, n);
    b->text = grown;
    b->len += n;
    b->text[b->len] = '\0';
    return n;
}

static int on_upload_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow,
                              curl_off_t ultotal, curl_off_t ulnow)
{
    (void)ctx, (void)dltotal, (void)dlnow;
    if (ultotal > 0)
        progress("upload", (uint64_t)ulnow, (uint64_t)ultotal, 1);
    return 0;
}

/* 1 when name is the file name of an operand that could not be read. */
static int unreadable(const char *name, char **bad, int n_bad)
{
    for (int i = 0; i < n_bad; i++) {
        char copy[PATH_MAX];
        snprintf(copy, sizeof copy, "%s", bad[i]);
        if (strcmp(basename(copy), name) == 0)
            return 1;
    }
    return 0;
}

/* The daemon's verdict, one line per file; the exit status. */
static int print_verdict(const char *text, char **bad, int n_bad)
{
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    json_t *imported = json_object_get(root, "imported"), *refused = json_object_get(root, "refused");
    if (!json_is_array(imported) || !json_is_array(refused)) {
        fprintf(stderr, "edgecache import: the daemon's answer is not an import result: %.300s\n",
                text);
        json_decref(root);
        return 2;
    }
    size_t i, fresh = 0, n_refused = (size_t)n_bad;
    json_t *v;
    json_array_foreach(imported, i, v) {
        int is_new = json_is_true(json_object_get(v, "new"));
        fresh += (size_t)is_new;
        printf("%s: %s %s (%lld bytes)\n", json_string_value(json_object_get(v, "file")),
               is_new ? "imported as" : "already stored as",
               json_string_value(json_object_get(v, "sha256")),
               (long long)json_integer_value(json_object_get(v, "size")));
    }
    json_array_foreach(refused, i, v) {
        const char *file = json_string_value(json_object_get(v, "file"));
        if (file && unreadable(file, bad, n_bad))
            continue;               /* said already: it could not be read here */
        n_refused++;
        printf("%s: refused: %s\n", file ? file : "?",
               json_string_value(json_object_get(v, "reason")));
    }
    size_t n_imp = json_array_size(imported);
    printf("imported %zu of %zu files: %zu new, %zu already stored, %zu refused\n", n_imp,
           n_imp + n_refused, fresh, n_imp - fresh, n_refused);
    printf("the daemon now holds %lld objects (%lld bytes)\n",
           (long long)json_integer_value(json_object_get(root, "objects")),
           (long long)json_integer_value(json_object_get(root, "bytes")));
    json_decref(root);
    return n_refused ? 1 : 0;
}

/* POSTs the manifest and the readable FILEs to URL/api/v1/import. */
static int upload(const struct cfg *cfg, const struct split *s, char **bad, int n_bad)
{
    char url[2048], auth[1100], err[CURL_ERROR_SIZE] = "";
    struct answer_buf answer = {0};
    struct curl_slist *hdrs = NULL;
    size_t base = strlen(s->admin_url);
    while (base && s->admin_url[base - 1] == '/')
        base--;
    snprintf(url, sizeof url, "%.*s/api/v1/import", (int)base, s->admin_url);
    CURL *h = curl_easy_init();
    curl_mime *mime = h ? curl_mime_init(h) : NULL;
    int rc = 2;
    if (!mime) {
        fprintf(stderr, "edgecache import: out of memory\n");
        goto out;
    }
    curl_mimepart *part = curl_mime_addpart(mime);
    curl_mime_name(part, "manifest");
    curl_mime_type(part, "application/json");
    if (curl_mime_filedata(part, s->operands[0]) != CURLE_OK) {
        fprintf(stderr, "edgecache import: cannot read %s\n", s->operands[0]);
        goto out;
    }
    for (int i = 1, j = 0; i < s->n_operands; i++) {
        if (j < n_bad && bad[j] == s->operands[i]) {
            j++;
            continue;               /* cannot be read: reported already */
        }
        part = curl_mime_addpart(mime);
        curl_mime_name(part, "file");
        curl_mime_type(part, "application/octet-stream");
        if (curl_mime_filedata(part, s->operands[i]) != CURLE_OK) {
            fprintf(stderr, "edgecache import: cannot read %s\n", s->operands[i]);
            goto out;
        }
    }
    if (cfg->admin_token && cfg->admin_token[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", cfg->admin_token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    /* a refusal (401, 413) comes before the files are sent */
    hdrs = curl_slist_append(hdrs, "Expect: 100-continue");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_MIMEPOST, mime);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_answer);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &answer);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (isatty(STDERR_FILENO)) {
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_upload_progress);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    }
    CURLcode cc = curl_easy_perform(h);
    if (isatty(STDERR_FILENO))
        fputc('\n', stderr);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK && !(cc == CURLE_SEND_ERROR && status >= 400 && answer.len)) {
        fprintf(stderr, "edgecache import: %s: %s\n", url, err[0] ? err : curl_easy_strerror(cc));
    } else if (status == 200 || status == 422) {
        rc = print_verdict(answer.text ? answer.text : "", bad, n_bad);
    } else {
        size_t n = answer.len;
        while (n && (answer.text[n - 1] == '\n' || answer.text[n - 1] == '\r'))
            n--;
        fprintf(stderr, "edgecache import: %s answered %ld: %.*s\n", url, status, (int)n,
                answer.text ? answer.text : "");
    }
out:
    curl_slist_free_all(hdrs);
    curl_mime_free(mime);
    if (h)
        curl_easy_cleanup(h);
    free(answer.text);
    return rc;
}

/* --admin-url: the FILEs that cannot be read are reported here, the others
 * go to the daemon with the manifest (checked here first). */
static int run_upload(const struct cfg *cfg, struct split *s)
{
    char why[700] = "";
    struct manifest_import_entry *e = NULL;
    json_t *root = load_manifest(s->operands[0], why, sizeof why);
    int n = root ? manifest_import_entries(root, &e, why, sizeof why) : -1, rc = 2;
    char **bad = calloc((size_t)s->n_operands + 1, sizeof *bad);
    int n_bad = 0;
    if (n < 0 || !bad) {
        fprintf(stderr, "edgecache import: %s\n", bad ? why : "out of memory");
    } else {
        for (int i = 1; i < s->n_operands; i++)
            if (access(s->operands[i], R_OK) != 0) {
                printf("cannot read %s: %s\n", s->operands[i], strerror(errno));
                bad[n_bad++] = s->operands[i];
            }
        rc = upload(cfg, s, bad, n_bad);
        if (rc == 0 && n_bad)
            rc = 1;
    }
    free(bad);
    free(e);
    json_decref(root);
    return rc;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: edgecache import [OPTION]... MANIFEST FILE...\n"
            "Checks every FILE against the import manifest MANIFEST (files[]: filename,\n"
            "sizeInBytes, hashes.sha256) and stores those that match; they are then served\n"
            "by hash to every URL whose expectation names their SHA-256.\n\n"
            "  --admin-url URL   import into the running daemon whose control plane is at\n"
            "                    URL (e.g. http://127.0.0.1:8081), with the token of\n"
            "                    --admin-token, EDGECACHE_ADMIN_TOKEN or the config file;\n"
            "                    it counts the files at once\n"
            "  --cache-dir DIR   without --admin-url: write the store in DIR directly (or\n"
            "                    EDGECACHE_CACHE_DIR, or cache_dir in the config file); a\n"
            "                    running daemon counts the files after its next start\n"
            "  -c FILE           the daemon's config file; every daemon option is accepted\n\n"
            "Exit status: 0 every file imported (or already stored), 1 a file was\n"
            "refused, 2 it could not run.\n");
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
    } else if (s.help) {
        usage(stdout);
        rc = 0;
    } else if (s.n_operands < 2) {
        usage(stderr);
    } else {
        enum cfg_result cr = cfg_load(&cfg, s.n_opts, s.opts, environ, stdout, err, sizeof err);
        if (cr == CFG_OK) {
            log_init(&log, cfg.log_level, cfg.log_format);
            if (s.admin_url)
                rc = run_upload(&cfg, &s);
            else if (!cfg.cache_dir_given)
                fprintf(stderr, "edgecache import: no cache directory: give --cache-dir DIR "
                        "(or EDGECACHE_CACHE_DIR, or cache_dir in the config file) to write "
                        "the store offline, or --admin-url URL to import into a running "
                        "daemon\n");
            else
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
