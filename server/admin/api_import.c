/*
 * POST /api/v1/import — sideloading over the control plane (DESIGN.md §7),
 * the upload form of `edgecache import`.
 *
 * The body is multipart/form-data: one field `manifest` (a Device Update
 * import manifest: files[] with filename, sizeInBytes, hashes.sha256 in
 * base64; a UTF-8 byte-order mark is fine) and one field `file` per file,
 * named by the filename of its Content-Disposition. The parts may come in
 * any order. Each file streams into a temp file of the store while its
 * SHA-256 is computed: nothing of it is held in memory. Once the body is
 * complete, each file is matched to its manifest entry by name; one that
 * the manifest does not list, that was uploaded twice, or whose size or
 * SHA-256 differs from its entry is refused and its temp file removed; an
 * entry without its file is refused too. The others are committed as a
 * fill's blob is (fsync, rename, the index row under the store's lock, on
 * the thread pool) and enter the catalog at once, so /status counts them
 * and they serve hits by hash to any URL whose expectation names them.
 *
 * Answers: 200 every file imported (or already stored), 422 something was
 * refused (the good files are stored all the same), both with
 *   {"imported": [{"file", "sha256", "size", "new"}],
 *    "refused": [{"file", "reason"}], "objects": N, "bytes": N}
 * (objects and bytes: what the store holds now); 400 a body that is not
 * multipart/form-data, is malformed, or has no manifest; 413 a manifest
 * over manifest_max_bytes, or files that add up to more than the cache
 * budget. A request cut off midway removes its temp files.
 *
 * Ownership: struct import belongs to its request (the request's sink)
 * until the body is complete, then to its pool job; import_free() is the
 * one destroy path either way and removes every temp file still open.
 *
 * Thread: loop thread, but commit_run (thread pool).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cache/catalog.h"
#include "cache/manifest.h"
#include "cache/digest.h"
#include "cache/evict.h"
#include "cache/index.h"
#include "cache/stats.h"
#include "cache/store.h"
#include "server/admin/api.h"

#define POST_BUFFER 65536
#define MAX_FILES 4096              /* file fields in one upload */

/* One uploaded file. */
struct upload {
    char *name;                     /* its filename, without any directory */
    char tmp[PATH_MAX];             /* its temp file while tmp_open */
    int fd;                         /* -1 once closed */
    int tmp_open;                   /* tmp names a file of ours under tmp/ */
    struct digest d;
    uint64_t size;
    char sha256[DIGEST_SHA256_HEX]; /* once the part is complete */
    char reason[300];               /* why it is refused; "" while good */
    int fresh;                      /* the store did not hold it */
    int stored;                     /* committed */
    int refused;                    /* listed in the refusals already */
    uint64_t seq;                   /* the commit's number (store_commit_recorded) */
    struct upload *next;
};

/* The part the post processor is in. */
enum part { PART_NONE, PART_MANIFEST, PART_FILE, PART_OTHER };

struct import {
    struct admin_job job;           /* first: the pool job, once the body is complete */
    struct edge *e;
    struct MHD_PostProcessor *pp;   /* while the body arrives */
    enum part part;
    char *part_key, *part_filename; /* of the part in progress */
    uint64_t part_bytes;
    char *manifest;                 /* the manifest field, NUL-terminated */
    size_t manifest_len;
    int manifests;                  /* manifest parts seen */
    struct upload *files, **tail, *cur;
    unsigned n_files;
    uint64_t total, budget;         /* file bytes so far; their bound */
    unsigned status;                /* 400 or 413 once the body is refused as a whole */
    char why[300];
    json_t *refused;                /* the refusals, once the body is complete */
    int ending;                     /* import_free() runs: parts are ignored */
};

static void upload_close(struct import *im, struct upload *u)
{
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
    if (u->tmp_open)
        store_temp_discard(&im->e->store, u->tmp);
    u->tmp_open = 0;
}

static void import_free(struct import *im)
{
    im->ending = 1;
    if (im->pp)
        MHD_destroy_post_processor(im->pp);
    im->pp = NULL;
    while (im->files) {
        struct upload *u = im->files;
        im->files = u->next;
        upload_close(im, u);
        digest_free(&u->d);
        free(u->name);
        free(u);
    }
    free(im->part_key);
    free(im->part_filename);
    free(im->manifest);
    json_decref(im->refused);
    free(im);
}

static void refuse_body(struct import *im, unsigned status, const char *why)
{
    if (im->status)
        return;
    im->status = status;
    snprintf(im->why, sizeof im->why, "%s\n", why);
    for (struct upload *u = im->files; u; u = u->next)
        upload_close(im, u);        /* nothing of a refused body is kept */
}

/* The part just completed: its SHA-256; its file stays, closed (an upload
 * of many files holds one descriptor at a time). */
static void file_done(struct upload *u)
{
    unsigned char bin[DIGEST_SHA256_LEN];
    if (u->sha256[0])
        return;
    digest_final(&u->d, bin);
    digest_hex(bin, sizeof bin, u->sha256);
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
}

static const char *base_name(const char *path)
{
    const char *b = path;
    for (const char *p = path; *p; p++)
        if (*p == '/' || *p == '\\')
            b = p + 1;
    return b;
}

static int same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int file_begin(struct import *im, const char *filename)
{
    const char *name = filename ? base_name(filename) : "";
    if (!name[0]) {
        refuse_body(im, MHD_HTTP_BAD_REQUEST, "a file field needs a file name (Content-"
                    "Disposition: form-data; name=\"file\"; filename=\"...\")");
        return 0;
    }
    if (++im->n_files > MAX_FILES) {
        refuse_body(im, MHD_HTTP_BAD_REQUEST, "more than 4096 files in one upload");
        return 0;
    }
    struct upload *u = calloc(1, sizeof *u);
    if (!u || !(u->name = strdup(name)) || digest_init(&u->d) != 0) {
        if (u)
            free(u->name);
        free(u);
        return -1;
    }
    json_t *valid = json_string(u->name);    /* the answer names it: UTF-8 only */
    for (char *p = u->name; !valid && *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    json_decref(valid);
    u->fd = -1;
    *im->tail = u;
    im->tail = &u->next;
    im->cur = u;
    if (im->status)
        return 0;
    u->fd = store_temp_create(&im->e->store, u->tmp, sizeof u->tmp);
    if (u->fd < 0)
        snprintf(u->reason, sizeof u->reason, "cannot create a temp file in %s: %s",
                 im->e->store.tmp_dir, strerror(errno));
    else
        u->tmp_open = 1;
    return 0;
}

/* A new part begins: the one before it is complete. */
static int part_begin(struct import *im, const char *key, const char *filename)
{
    if (im->cur)
        file_done(im->cur);
    im->cur = NULL;
    free(im->part_key);
    free(im->part_filename);
    im->part_key = strdup(key ? key : "");
    im->part_filename = filename ? strdup(filename) : NULL;
    im->part_bytes = 0;
    if (!im->part_key || (filename && !im->part_filename))
        return -1;
    if (key && strcmp(key, "manifest") == 0) {
        im->part = PART_MANIFEST;
        if (++im->manifests > 1)
            refuse_body(im, MHD_HTTP_BAD_REQUEST, "the body has more than one manifest field");
        return 0;
    }
    if (key && strcmp(key, "file") == 0) {
        im->part = PART_FILE;
        return file_begin(im, filename);
    }
    im->part = PART_OTHER;          /* another field: not ours, ignored */
    return 0;
}

static void manifest_data(struct import *im, const char *data, size_t n)
{
    uint64_t max = im->e->cfg->manifest_max_bytes;
    if (im->status)
        return;
    if (im->manifest_len + n > max) {
        char text[200];
        snprintf(text, sizeof text, "the manifest is larger than %llu bytes (config key: "
                 "manifest_max_bytes)", (unsigned long long)max);
        refuse_body(im, MHD_HTTP_CONTENT_TOO_LARGE, text);
        return;
    }
    char *grown = realloc(im->manifest, im->manifest_len + n + 1);
    if (!grown) {
        refuse_body(im, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
        return;
    }
    memcpy(grown + im->manifest_len, data, n);
    im->manifest = grown;
    im->manifest_len += n;
    im->manifest[im->manifest_len] = '\0';
}

static void file_data(struct import *im, struct upload *u, const char *data, size_t n)
{
    im->total += n;
    if (!im->status && im->total > im->budget) {
        char text[200];
        snprintf(text, sizeof text, "the files add up to more than the cache budget of %llu "
                 "bytes (config key: cache_size)", (unsigned long long)im->budget);
        refuse_body(im, MHD_HTTP_CONTENT_TOO_LARGE, text);
    }
    if (im->status || u->fd < 0)
        return;
    digest_update(&u->d, data, n);
    u->size += n;
    for (size_t done = 0; done < n;) {
        ssize_t w = write(u->fd, data + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(u->reason, sizeof u->reason, "cannot write %s: %s", u->tmp,
                     w < 0 ? strerror(errno) : "nothing written");
            upload_close(im, u);
            return;
        }
        done += (size_t)w;
    }
}

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *filename, const char *content_type,
                               const char *transfer_encoding, const char *data, uint64_t off,
                               size_t size)
{
    struct import *im = cls;
    (void)kind, (void)content_type, (void)transfer_encoding;
    if (im->ending)
        return MHD_YES;
    /* a part begins at offset 0 with a name of its own, or after one with bytes */
    int next = im->part == PART_NONE || !same(key, im->part_key)
               || !same(filename, im->part_filename) || (off == 0 && im->part_bytes > 0);
    if (next && part_begin(im, key, filename) != 0)
        return MHD_NO;
    im->part_bytes += size;
    if (size == 0)
        return MHD_YES;
    if (im->part == PART_MANIFEST)
        manifest_data(im, data, size);
    else if (im->part == PART_FILE && im->cur)
        file_data(im, im->cur, data, size);
    return MHD_YES;
}

static int sink_data(struct admin_req *req, void *ctx, const char *data, size_t n)
{
    struct import *im = ctx;
    (void)req;
    if (!im || !im->pp || im->status)
        return 0;                   /* refused as a whole: the rest is read and dropped */
    if (MHD_post_process(im->pp, data, n) != MHD_YES && !im->status) {
        if (!im->files && !im->manifests && !im->why[0])
            refuse_body(im, MHD_HTTP_BAD_REQUEST, "the body is not multipart/form-data");
        else
            refuse_body(im, MHD_HTTP_BAD_REQUEST, "the multipart body is malformed");
    }
    return 0;
}

static void sink_release(void *ctx)
{
    import_free(ctx);
}

static const struct admin_sink import_sink = {sink_data, sink_release};

enum MHD_Result api_import_begin(struct admin_req *req)
{
    struct edge *e = req->e;
    const char *ctype = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *cl = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    uint64_t budget = evict_budget(e->evictor);
    char text[240];
    if (!ctype || strncasecmp(ctype, "multipart/form-data", 19) != 0)
        return admin_reply_text(req->conn, MHD_HTTP_BAD_REQUEST,
                                "the body must be multipart/form-data: a manifest field "
                                "and one file field per file\n");
    if (cl && strtoull(cl, NULL, 10) > budget + e->cfg->manifest_max_bytes) {
        snprintf(text, sizeof text, "the upload is larger than the cache budget of %llu "
                 "bytes (config key: cache_size)\n", (unsigned long long)budget);
        return admin_reply_text(req->conn, MHD_HTTP_CONTENT_TOO_LARGE, text);
    }
    struct import *im = calloc(1, sizeof *im);
    if (!im)
        return admin_reply_text(req->conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    im->e = e;
    im->tail = &im->files;
    im->budget = budget;
    im->pp = MHD_create_post_processor(req->conn, POST_BUFFER, on_part, im);
    if (!im->pp) {
        import_free(im);
        return admin_reply_text(req->conn, MHD_HTTP_BAD_REQUEST,
                                "the body must be multipart/form-data with a boundary\n");
    }
    admin_sink_set(req, &import_sink, im);
    return MHD_YES;
}

/* ---- once the body is complete ------------------------------------------------ */

/* A manifest entry and the upload matched to it. */
struct entry {
    struct manifest_import_entry want;
    struct upload *got;
};

static struct entry *entry_named(struct entry *e, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(e[i].want.name, name) == 0)
            return &e[i];
    return NULL;
}

/* Checks one upload against its entry; sets u->reason when it is refused. */
static void check_upload(struct edge *e, struct upload *u, struct entry *want)
{
    struct upload *before = want ? want->got : NULL;
    uint64_t had;
    if (want && !before)
        want->got = u;
    if (u->reason[0])
        return;
    if (!want)
        snprintf(u->reason, sizeof u->reason, "not listed in the manifest");
    else if (before)
        snprintf(u->reason, sizeof u->reason, "uploaded more than once");
    else if (want->want.size >= 0 && (uint64_t)want->want.size != u->size)
        snprintf(u->reason, sizeof u->reason, "%llu bytes, the manifest says %lld",
                 (unsigned long long)u->size, (long long)want->want.size);
    else if (strcmp(u->sha256, want->want.sha256) != 0)
        snprintf(u->reason, sizeof u->reason, "sha256 %s, the manifest says %s", u->sha256,
                 want->want.sha256);
    else
        u->fresh = !catalog_blob(e->catalog, u->sha256, &had);
}

static json_t *refusal(const char *file, const char *reason)
{
    return json_pack("{s:s, s:s}", "file", file, "reason", reason);
}

/* Matches every upload to the manifest; refused ones lose their temp file
 * and join `refused`. Returns how many are still good, or -1 with why. */
static int match_uploads(struct import *im, json_t *refused, char *why, size_t whylen)
{
    const char *text = im->manifest;
    if (im->manifest_len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        text += 3;                  /* a byte-order mark */
    json_error_t jerr;
    json_t *root = json_loadb(text, im->manifest_len - (size_t)(text - im->manifest), 0, &jerr);
    if (!root) {
        snprintf(why, whylen, "the manifest is malformed JSON at line %d, column %d: %s",
                 jerr.line, jerr.column, jerr.text);
        return -1;
    }
    struct manifest_import_entry *files = NULL;
    struct entry *ent = NULL;
    int n = manifest_import_entries(root, &files, why, whylen), good = 0;
    if (n >= 0 && !(ent = calloc((size_t)n, sizeof *ent))) {
        snprintf(why, whylen, "out of memory");
        n = -1;
    }
    if (n < 0) {
        free(files);
        json_decref(root);
        return -1;
    }
    for (int i = 0; i < n; i++)
        ent[i].want = files[i];
    free(files);
    for (struct upload *u = im->files; u; u = u->next) {
        check_upload(im->e, u, entry_named(ent, n, u->name));
        if (u->reason[0]) {
            upload_close(im, u);
            u->refused = 1;
            json_array_append_new(refused, refusal(u->name, u->reason));
        } else {
            good++;
        }
    }
    for (int i = 0; i < n; i++)
        if (!ent[i].got)
            json_array_append_new(refused, refusal(ent[i].want.name, "not in the upload"));
    free(ent);
    json_decref(root);
    return good;
}

/* The index row, written under the store's lock right after the blob
 * appears (store_commit_recorded). */
struct record_ctx {
    struct index *index;
    struct upload *u;
};

static int record_row(void *ctx)
{
    struct record_ctx *r = ctx;
    return index_import_object(r->index, r->u->sha256, r->u->size, (int64_t)time(NULL));
}

/* Thread pool: fsync, rename and index row of every good file. */
static void commit_run(struct admin_job *j)
{
    struct import *im = (struct import *)j;
    for (struct upload *u = im->files; u; u = u->next) {
        if (!u->tmp_open)
            continue;
        struct record_ctx r = {j->e->index, u};
        int rc = (u->fd = open(u->tmp, O_RDONLY | O_CLOEXEC)) < 0 ? -errno
                 : store_commit_recorded(&j->e->store, u->fd, u->tmp, u->sha256, record_row, &r,
                                         &u->seq);
        if (rc == 0 || access(u->tmp, F_OK) != 0)
            u->tmp_open = 0;        /* a blob now, or gone */
        if (rc == 0)
            u->stored = 1;
        else
            snprintf(u->reason, sizeof u->reason, "cannot store it: %s", strerror(-rc));
        if (u->fd >= 0)
            close(u->fd);
        u->fd = -1;
    }
}

/* 200 or 422 with the lists and what the store holds now. */
static void answer(struct edge *e, struct admin_req *req, json_t *imported, json_t *refused)
{
    unsigned status = json_array_size(refused) ? 422 : 200;
    json_t *doc = json_pack("{s:O, s:O, s:I, s:I}", "imported", imported, "refused", refused,
                            "objects", (json_int_t)e->stats.objects, "bytes",
                            (json_int_t)e->stats.stored_bytes);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    size_t n = text ? strlen(text) : 0;
    char *line = text ? malloc(n + 2) : NULL;
    if (line) {
        memcpy(line, text, n);
        memcpy(line + n, "\n", 2);
        admin_answer(req, status, "application/json", line);
    } else {
        admin_answer(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "out of memory\n");
    }
    free(text);
    free(line);
}

/* Loop thread: the stored files enter the catalog; the answer. */
static void commit_finish(struct admin_job *j)
{
    struct import *im = (struct import *)j;
    struct edge *e = j->e;
    json_t *imported = json_array();
    int fresh = 0;
    for (struct upload *u = im->files; u; u = u->next) {
        if (u->stored) {
            catalog_blob_added_at(e->catalog, u->sha256, u->size, u->seq);
            fresh += u->fresh;
            log_msg(&e->log, LOG_INFO, "admin", "imported %s as %s (%llu bytes)%s", u->name,
                    u->sha256, (unsigned long long)u->size, u->fresh ? "" : ", already stored");
            json_array_append_new(imported, json_pack("{s:s, s:s, s:I, s:b}", "file", u->name,
                                                      "sha256", u->sha256, "size",
                                                      (json_int_t)u->size, "new", u->fresh));
        } else if (u->reason[0] && !u->refused) {
            log_msg(&e->log, LOG_ERROR, "admin", "import of %s failed: %s", u->name, u->reason);
            json_array_append_new(im->refused, refusal(u->name, u->reason));
        }
    }
    if (fresh)
        evict_check(e->evictor);
    if (j->req)
        answer(e, j->req, imported, im->refused);
    json_decref(imported);
}

static void commit_destroy(struct admin_job *j)
{
    import_free((struct import *)j);
}

/* The body is complete: refuse it as a whole (400, 413), or match, then
 * commit the good files on the pool. */
enum MHD_Result api_import(struct admin_req *req)
{
    struct import *im = req->sink == &import_sink ? admin_sink_detach(req) : NULL;
    char why[400] = "";
    if (!im)
        return admin_reply_text(req->conn, MHD_HTTP_BAD_REQUEST,
                                "the body must be multipart/form-data\n");
    if (MHD_destroy_post_processor(im->pp) != MHD_YES && !im->status)
        refuse_body(im, MHD_HTTP_BAD_REQUEST, "the multipart body is malformed or cut short");
    im->pp = NULL;
    if (im->cur)
        file_done(im->cur);
    if (!im->status && !im->manifests)
        refuse_body(im, MHD_HTTP_BAD_REQUEST, "the body has no manifest field (the import "
                    "manifest, beside one file field per file)");
    if (!im->status && !(im->refused = json_array()))
        refuse_body(im, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    int good = im->status ? -1 : match_uploads(im, im->refused, why, sizeof why);
    if (!im->status && good < 0) {
        snprintf(im->why, sizeof im->why, "%s\n", why);
        im->status = MHD_HTTP_BAD_REQUEST;
    }
    if (im->status) {
        enum MHD_Result ret = admin_reply_text(req->conn, im->status, im->why);
        for (struct upload *u = im->files; u; u = u->next)
            upload_close(im, u);
        import_free(im);
        return ret;
    }
    im->job.run = commit_run;
    im->job.finish = commit_finish;
    im->job.destroy = commit_destroy;
    if (good == 0) {                /* nothing to commit: answer now */
        struct edge *e = req->e;
        json_t *none = json_array();
        answer(e, req, none, im->refused);
        json_decref(none);
        import_free(im);
        return admin_send_answer(req);
    }
    return admin_job_start(req, &im->job);
}
