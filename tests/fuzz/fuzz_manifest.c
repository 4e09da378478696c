/*
 * fuzz_manifest — deployment documents rewritten for children, and the
 * files of a detached update manifest (cache/manifest.h).
 *
 * Feeds: the input, exactly as it came (not NUL-terminated: the buffer is
 * `size` bytes, so reading past it is an ASan error), as a JSON body to
 * manifest_rewrite() with the options the daemon uses (a cache base, the
 * allow-list of a cfg built by cfg_load() from an argv array, read through
 * manifest_allow_cfg, max_bytes 64K), and as a detached manifest to
 * manifest_files_from_update_manifest(), joined with the files the rewrite
 * found (or, when it refused the input, with a fixed list of known files
 * whose ids and names are those of the fixtures).
 *
 * Checks, beyond "no crash, no leak, no UB":
 *   - an error has a documented status (400, 413, 415, 422, 500), a
 *     message, and leaves the result zeroed (*out NULL for the files);
 *   - a rewrite's document is NUL-terminated at len with no NUL inside, is
 *     valid JSON, and names at least one file; every file has an id, a
 *     name, an http(s) origin URL, a DO-shape rewritten URL under the
 *     cache base with cacheHostOrigin, a deployment id, a lower-case hex
 *     SHA-256 when it claims one, and a size >= -1;
 *   - rewriting the answer again gives the same bytes, files (origin and
 *     rewritten URLs, deployment ids) and deployment id (the header's
 *     "rewriting twice gives the same document"; every layer of a
 *     hierarchy derives the same deployment ids);
 *   - no host in an origin URL holds a '%' (it would be decoded again);
 *   - every file read from a detached manifest carries the URL and the
 *     rewritten URL of a known file with the same id.
 *
 * run.sh: -max_len=16384
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/digest.h"
#include "cache/manifest.h"
#include "config/cfg.h"
#include "fuzz_util.h"

#define BASE "http://gw:8080"

static struct cfg cfg;
static struct manifest_opts opts;

/* Files a detached manifest may name when the rewrite found none. */
static struct manifest_file fixed_known[] = {
    { .id = "f13b5435aab7c18da", .name = "contoso-motor-installscript.sh",
      .url = "http://a.dl.adu.microsoft.com/s.sh",
      .rewritten = BASE "/s.sh?cacheHostOrigin=a.dl.adu.microsoft.com",
      .deployment_id = "dep", .size = -1 },
    { .id = "f2c5d1f3b0295db0f", .name = "motor-firmware-1.1.json",
      .url = "http://a.dl.adu.microsoft.com/m.json",
      .rewritten = BASE "/m.json?cacheHostOrigin=a.dl.adu.microsoft.com",
      .deployment_id = "dep", .size = -1 },
    { .id = "TARGET_UPDATE_FILE_ID", .name = "target_update.swu", .url = "http://o/target",
      .rewritten = BASE "/target?cacheHostOrigin=o", .deployment_id = "dep", .size = -1 },
    { .id = "DELTA_UPDATE_FILE_ID", .name = "DELTA_UPDATE_FILE_NAME", .url = "http://o/delta",
      .rewritten = BASE "/delta?cacheHostOrigin=o", .deployment_id = "dep", .size = -1 },
    { .id = "f1", .name = "libcurl4-doc-apt-manifest.json", .url = "http://o/l.json",
      .rewritten = BASE "/l.json?cacheHostOrigin=o", .deployment_id = "dep", .size = -1 },
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static char *args[] = {
        "edgecache",
        "--allow", "http://*.dl.adu.microsoft.com, https://*.blob.core.windows.net",
        "--allow", "http://127.0.0.1:9000 http://firmware.example.com:8081",
        "--node-id", "fuzz",
        NULL,
    };
    char *envp[] = { NULL };
    char err[512] = "";
    FILE *devnull = fopen("/dev/null", "w");
    (void)argc;
    (void)argv;
    if (!devnull ||
        cfg_load(&cfg, (int)(sizeof args / sizeof args[0]) - 1, args, envp, devnull, err,
                 sizeof err) != CFG_OK) {
        fprintf(stderr, "fuzz_manifest: cannot build the configuration: %s\n", err);
        abort();
    }
    fclose(devnull);
    opts = (struct manifest_opts){
        .cache_base = BASE,
        .allow = manifest_allow_cfg,
        .allow_ctx = &cfg,
        .max_bytes = 64 * 1024,
    };
    return 0;
}

static void check_error(int rc, const struct manifest_error *err, const char *what)
{
    FUZZ_CHECK(rc == -1, "%s returned %d", what, rc);
    FUZZ_CHECK(err->status == 400 || err->status == 413 || err->status == 415 ||
                   err->status == 422 || err->status == 500,
               "%s: status %d (%s)", what, err->status, err->message);
    FUZZ_CHECK(memchr(err->message, '\0', sizeof err->message) && err->message[0] != '\0',
               "%s: status %d without a message", what, err->status);
}

static void check_file(const struct manifest_file *f, const char *what)
{
    FUZZ_CHECK(f->id && f->name && f->url && f->rewritten && f->deployment_id,
               "%s: a file with a NULL string", what);
    FUZZ_CHECK(fuzz_starts_with(f->url, "http://") || fuzz_starts_with(f->url, "https://"),
               "%s: file %s: origin URL %s", what, f->id, f->url);
    const char *host = strstr(f->url, "://") + 3;
    FUZZ_CHECK(!memchr(host, '%', strcspn(host, "/?#")), "%s: file %s: a '%%' in the host of %s",
               what, f->id, f->url);
    FUZZ_CHECK(fuzz_starts_with(f->rewritten, BASE "/") &&
                   strstr(f->rewritten, "cacheHostOrigin="),
               "%s: file %s: rewritten URL %s", what, f->id, f->rewritten);
    if (f->has_sha256)
        FUZZ_CHECK(digest_is_sha256_hex(f->sha256_hex), "%s: file %s: sha256 '%.65s'", what,
                   f->id, f->sha256_hex);
    FUZZ_CHECK(f->size >= -1, "%s: file %s: size %lld", what, f->id, (long long)f->size);
}

static void check_rewrite(const struct manifest_result *r)
{
    FUZZ_CHECK(r->doc && r->doc[r->len] == '\0' && strlen(r->doc) == r->len,
               "rewrite: document not NUL-terminated at len %zu", r->len);
    FUZZ_CHECK(r->n_files > 0 && r->files, "rewrite: OK without files");
    FUZZ_CHECK(r->deployment_id && r->deployment_id[0], "rewrite: no deployment id");
    for (size_t i = 0; i < r->n_files; i++)
        check_file(&r->files[i], "rewrite");

    /* A byte-order mark is copied as it came; jansson does not take one. */
    size_t bom = r->len >= 3 && memcmp(r->doc, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    json_error_t je;
    json_t *doc = json_loadb(r->doc + bom, r->len - bom, JSON_DECODE_ANY, &je);
    FUZZ_CHECK(doc, "rewrite: the answer is not JSON: %s (line %d column %d)", je.text,
               je.line, je.column);
    json_decref(doc);

    struct manifest_result again;
    struct manifest_error err;
    int rc = manifest_rewrite(r->doc, r->len, &opts, &again, &err);
    FUZZ_CHECK(rc == 0, "rewriting the answer again failed: %d %s", err.status, err.message);
    FUZZ_CHECK(again.len == r->len && memcmp(again.doc, r->doc, r->len) == 0,
               "rewriting the answer again changed it:\n%s\n---\n%s", r->doc, again.doc);
    FUZZ_CHECK(again.n_files == r->n_files, "rewriting again: %zu files, not %zu",
               again.n_files, r->n_files);
    for (size_t i = 0; i < r->n_files; i++) {
        FUZZ_CHECK(strcmp(again.files[i].url, r->files[i].url) == 0,
                   "rewriting again: file %zu URL %s, not %s", i, again.files[i].url,
                   r->files[i].url);
        FUZZ_CHECK(strcmp(again.files[i].rewritten, r->files[i].rewritten) == 0,
                   "rewriting again: file %zu rewritten %s, not %s", i,
                   again.files[i].rewritten, r->files[i].rewritten);
        FUZZ_CHECK(strcmp(again.files[i].deployment_id, r->files[i].deployment_id) == 0,
                   "rewriting again: file %zu deployment %s, not %s", i,
                   again.files[i].deployment_id, r->files[i].deployment_id);
    }
    FUZZ_CHECK(strcmp(again.deployment_id, r->deployment_id) == 0,
               "rewriting again: deployment %s, not %s", again.deployment_id,
               r->deployment_id);
    manifest_result_free(&again);
}

static void check_detached(const char *json, size_t len, const struct manifest_file *known,
                           size_t n_known)
{
    static struct manifest_file sentinel;
    struct manifest_file *files = &sentinel;        /* must be overwritten */
    struct manifest_error err;
    size_t n = 99;
    int rc = manifest_files_from_update_manifest(json, len, known, n_known, &files, &n, &err);
    if (rc != 0) {
        check_error(rc, &err, "detached manifest");
        FUZZ_CHECK(files == NULL && n == 0, "detached manifest: error with files set");
        return;
    }
    FUZZ_CHECK(n == 0 || files, "detached manifest: %zu files, NULL array", n);
    for (size_t i = 0; i < n; i++) {
        const struct manifest_file *f = &files[i], *k = NULL;
        FUZZ_CHECK(f->id && f->url, "detached manifest: a file without id or URL");
        for (size_t j = 0; j < n_known && !k; j++)
            if (strcmp(known[j].id, f->id) == 0 && strcmp(known[j].url, f->url) == 0)
                k = &known[j];
        FUZZ_CHECK(k, "detached manifest: file %s (%s) is not a known one", f->id, f->url);
        FUZZ_CHECK(f->rewritten && strcmp(f->rewritten, k->rewritten) == 0,
                   "detached manifest: file %s: rewritten %s, not %s", f->id,
                   f->rewritten ? f->rewritten : "(null)", k->rewritten);
        if (f->has_sha256)
            FUZZ_CHECK(digest_is_sha256_hex(f->sha256_hex),
                       "detached manifest: file %s: sha256 '%.65s'", f->id, f->sha256_hex);
    }
    manifest_files_free(files, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    struct manifest_result r;
    struct manifest_error err;

    int rc = manifest_rewrite(body, size, &opts, &r, &err);
    if (rc == 0) {
        check_rewrite(&r);
        check_detached(body, size, r.files, r.n_files);
    } else {
        check_error(rc, &err, "rewrite");
        FUZZ_CHECK(!r.doc && !r.files && r.n_files == 0 && !r.deployment_id,
                   "rewrite: error %d but the result is not zeroed", err.status);
        check_detached(body, size, fixed_known, sizeof fixed_known / sizeof fixed_known[0]);
    }
    manifest_result_free(&r);
    return 0;
}
