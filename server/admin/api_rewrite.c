/*
 * Manifests on the control plane (DESIGN.md §4):
 *   POST /api/v1/rewrite[?prefetch=1]   the document with its download URLs
 *                                        pointing at this cache
 *   POST /api/v1/prefetch               (a manifest body) the same files
 *                                        fetched and pinned, no rewrite
 *
 * Order of work: rewrite (cache/manifest.c, on the loop: it is CPU only and
 * bounded by manifest_max_bytes) -> the expectations it carries registered
 * in one transaction on the thread pool -> the answer, and only then the
 * prefetch, so every fill it starts already knows its SHA-256. A detached
 * manifest file is always fetched: once stored (and so verified against the
 * digest the parent promised), it is read and parsed on the thread pool and
 * the files only it lists are registered (and prefetched when asked).
 * Nothing is registered from a request that is refused.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/catalog.h"
#include "cache/index.h"
#include "cache/manifest.h"
#include "cache/prefetch.h"
#include "cache/route.h"
#include "cache/stats.h"
#include "cache/store.h"
#include "server/admin/api.h"

struct rewrite_job {
    struct admin_job base;          /* first */
    struct manifest_result res;
    struct index_expectation *exp;
    size_t n_exp;
    int rc;
    int prefetch;                   /* fetch and pin every file */
    int answer_doc;                 /* /rewrite answers the document */
    char *body;                     /* the request's, for the parent */
    size_t body_len;
    int from_peer;                  /* a peer handed it on: it goes no further */
};

/* A detached manifest being fetched: what its files are joined with. */
struct detached {
    uv_work_t work;
    struct edge *e;
    struct manifest_file *known;    /* a copy of the parent's files */
    size_t n_known;
    char *deployment_id;
    char sha256[65];                /* the stored blob */
    int prefetch;
    struct manifest_file *files;    /* what it lists */
    size_t n_files;
    struct index_expectation *exp;
    size_t n_exp;
    int rc;
};

/* Expectations for the files that carry a SHA-256 (keys malloc'd). */
static int build_expectations(const struct manifest_file *files, size_t n,
                              struct index_expectation **out, size_t *n_out)
{
    struct index_expectation *e = calloc(n ? n : 1, sizeof *e);
    size_t k = 0;
    if (!e)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!files[i].has_sha256)
            continue;
        char *key = route_key_for_url(files[i].url);
        if (!key)
            continue;
        e[k++] = (struct index_expectation){.key = key, .sha256 = files[i].sha256_hex,
                                            .size = files[i].size, .source = "manifest"};
    }
    *out = e;
    *n_out = k;
    return 0;
}

static void free_expectations(struct index_expectation *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((char *)e[i].key);
    free(e);
}

static void detached_free(struct detached *d)
{
    manifest_files_free(d->known, d->n_known);
    manifest_files_free(d->files, d->n_files);
    free_expectations(d->exp, d->n_exp);
    free(d->deployment_id);
    free(d);
}

static void queue_files(struct edge *e, const char *id, const struct manifest_file *files,
                        size_t n, int pin, struct detached *(*detach)(void *, size_t),
                        void *detach_ctx);

/* Thread pool: read the stored detached manifest and learn its files. */
static void detached_work(uv_work_t *w)
{
    struct detached *d = w->data;
    char path[4096];
    struct manifest_error err;
    store_blob_path(&d->e->store, d->sha256, path, sizeof path);
    FILE *f = fopen(path, "rb");
    char *buf = f ? malloc(d->e->cfg->manifest_max_bytes + 1) : NULL;
    size_t len = buf ? fread(buf, 1, d->e->cfg->manifest_max_bytes + 1, f) : 0;
    if (f)
        fclose(f);
    d->rc = -1;
    if (buf && len <= d->e->cfg->manifest_max_bytes
        && manifest_files_from_update_manifest(buf, len, d->known, d->n_known, &d->files,
                                               &d->n_files, &err) == 0
        && build_expectations(d->files, d->n_files, &d->exp, &d->n_exp) == 0)
        d->rc = index_expect_put(d->e->index, d->exp, d->n_exp);
    free(buf);
}

static void detached_after(uv_work_t *w, int status)
{
    struct detached *d = w->data;
    char id[300];
    (void)status;
    if (d->rc == 0) {
        catalog_expect_all(d->e->catalog, d->exp, d->n_exp);
        d->e->stats.expectations_registered += d->n_exp;
        log_msg(&d->e->log, LOG_INFO, "manifest", "%s: detached manifest lists %zu files, "
                "%zu with a digest", d->deployment_id, d->n_files, d->n_exp);
        if (d->prefetch && d->e->prefetch && d->n_files) {
            snprintf(id, sizeof id, "%s/detached", d->deployment_id);
            queue_files(d->e, id, d->files, d->n_files, 1, NULL, NULL);
        }
    } else {
        log_msg(&d->e->log, LOG_WARN, "manifest", "%s: the detached manifest %s could not be "
                "read as an update manifest", d->deployment_id, d->sha256);
    }
    detached_free(d);
}

/* prefetch's done callback for a detached manifest file. */
static void detached_fetched(void *arg, const char *key, const char *stored_sha)
{
    struct detached *d = arg;
    (void)key;
    if (!stored_sha) {
        detached_free(d);
        return;
    }
    snprintf(d->sha256, sizeof d->sha256, "%s", stored_sha);
    d->work.data = d;
    if (uv_queue_work(d->e->loop, &d->work, detached_work, detached_after) != 0)
        detached_free(d);
}

static struct manifest_file *copy_files(const struct manifest_file *src, size_t n)
{
    struct manifest_file *f = calloc(n ? n : 1, sizeof *f);
    for (size_t i = 0; f && i < n; i++) {
        f[i] = src[i];
        f[i].id = src[i].id ? strdup(src[i].id) : NULL;
        f[i].name = src[i].name ? strdup(src[i].name) : NULL;
        f[i].url = src[i].url ? strdup(src[i].url) : NULL;
        f[i].rewritten = src[i].rewritten ? strdup(src[i].rewritten) : NULL;
        f[i].deployment_id = src[i].deployment_id ? strdup(src[i].deployment_id) : NULL;
    }
    return f;
}

/* Hands files to the prefetch as deployment id. Related files (a delta's
 * source, which devices hold) are not fetched. detach(ctx, i) gives the
 * done-context of file i when it is a detached manifest. */
static void queue_files(struct edge *e, const char *id, const struct manifest_file *files,
                        size_t n, int pin, struct detached *(*detach)(void *, size_t),
                        void *detach_ctx)
{
    struct prefetch_item *items = calloc(n ? n : 1, sizeof *items);
    size_t k = 0;
    if (!items)
        return;
    for (size_t i = 0; i < n; i++) {
        if (files[i].related)
            continue;
        char *key = route_key_for_url(files[i].url);
        if (!key)
            continue;
        struct detached *d = detach && files[i].detached_manifest ? detach(detach_ctx, i) : NULL;
        items[k++] = (struct prefetch_item){
            .key = key, .url = files[i].url, .name = files[i].name,
            .sha256 = files[i].has_sha256 ? files[i].sha256_hex : NULL, .size = files[i].size,
            .done = d ? detached_fetched : NULL, .done_arg = d,
        };
    }
    if (k && prefetch_add(e->prefetch, id, items, k, pin) != 0)
        log_msg(&e->log, LOG_ERROR, "manifest", "%s: could not queue the prefetch", id);
    for (size_t i = 0; i < k; i++)
        free((char *)items[i].key);
    free(items);
}

struct detach_ctx {
    struct rewrite_job *x;
};

static struct detached *make_detached(void *ctx, size_t i)
{
    struct rewrite_job *x = ((struct detach_ctx *)ctx)->x;
    struct detached *d = calloc(1, sizeof *d);
    (void)i;
    if (!d)
        return NULL;
    d->e = x->base.e;
    d->known = copy_files(x->res.files, x->res.n_files);
    d->n_known = x->res.n_files;
    d->deployment_id = strdup(x->res.deployment_id ? x->res.deployment_id : "deployment");
    d->prefetch = x->prefetch;
    if (!d->known || !d->deployment_id) {
        detached_free(d);
        return NULL;
    }
    return d;
}

/* Detached manifests are fetched even without ?prefetch: their files'
 * digests are learnt from them. */
static void start_fetches(struct rewrite_job *x)
{
    struct edge *e = x->base.e;
    struct detach_ctx dc = {x};
    const char *id = x->res.deployment_id ? x->res.deployment_id : "deployment";
    char sub[300];
    if (!e->prefetch)
        return;
    if (x->prefetch) {
        queue_files(e, id, x->res.files, x->res.n_files, 1, make_detached, &dc);
        return;
    }
    struct manifest_file *only = calloc(x->res.n_files ? x->res.n_files : 1, sizeof *only);
    size_t k = 0;
    for (size_t i = 0; only && i < x->res.n_files; i++)
        if (x->res.files[i].detached_manifest)
            only[k++] = x->res.files[i];
    snprintf(sub, sizeof sub, "%s/manifest", id);
    if (k)
        queue_files(e, sub, only, k, 0, make_detached, &dc);
    free(only);
}

static void rewrite_run(struct admin_job *j)
{
    struct rewrite_job *x = (struct rewrite_job *)j;
    x->rc = x->n_exp ? index_expect_put(j->e->index, x->exp, x->n_exp) : 0;
}

static void rewrite_finish(struct admin_job *j)
{
    struct rewrite_job *x = (struct rewrite_job *)j;
    char text[400];
    if (x->rc != 0) {
        if (j->req)
            admin_answer(j->req, 500, "text/plain", "the index refused the expectations (see the log)\n");
        return;
    }
    catalog_expect_all(j->e->catalog, x->exp, x->n_exp);
    j->e->stats.expectations_registered += x->n_exp;
    start_fetches(x);
    /* the layer's other nodes register it too (their own files prefetched
     * and pinned by them), then the parent; a peer's copy goes no further */
    const char *call = x->prefetch ? "/api/v1/rewrite?prefetch=1" : "/api/v1/rewrite";
    if (!x->from_peer) {
        forward_to_peers(j->e, call, x->body, x->body_len);
        forward_to_parent(j->e, call, x->body, x->body_len);
    }
    if (!j->req)
        return;
    if (x->answer_doc) {
        admin_answer(j->req, 200, "application/json", x->res.doc);
        return;
    }
    json_t *o = json_pack("{s:s, s:I, s:I}", "deployment",
                          x->res.deployment_id ? x->res.deployment_id : "",
                          "files", (json_int_t)x->res.n_files, "expectations", (json_int_t)x->n_exp);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    snprintf(text, sizeof text, "%s\n", s ? s : "{}");
    free(s);
    admin_answer(j->req, 202, "application/json", text);
}

static void rewrite_destroy(struct admin_job *j)
{
    struct rewrite_job *x = (struct rewrite_job *)j;
    manifest_result_free(&x->res);
    free_expectations(x->exp, x->n_exp);
    free(x->body);
    free(x);
}

/* Where children reach this cache (route_cache_base): advertise_url, else
 * the host the request came to with the data plane's port. A loopback host
 * while the data plane listens beyond it is answered with a Warning. */
static char *cache_base(struct admin_req *req, char *why, size_t whylen)
{
    const struct cfg *cfg = req->e->cfg;
    const char *host = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Host");
    int warn = 0;
    char *url = route_cache_base(cfg, host, &warn, why, whylen);
    if (!url)
        return NULL;
    char *base = manifest_cache_base(url, why, whylen);
    if (base && warn) {
        req->warning = 1;
        log_msg(&req->e->log, LOG_WARN, "manifest", "the rewritten URLs name %s, a loopback "
                "address, while devices reach the data plane at %s:%u: set advertise_url "
                "(config key) to the URL devices use, e.g. http://<gateway name>:%u",
                base, cfg->listen.host, cfg->listen.port, cfg->listen.port);
    }
    free(url);
    return base;
}

enum MHD_Result api_manifest(struct admin_req *req, int prefetch, int answer_doc)
{
    struct manifest_error err = {0};
    char why[400], text[700];
    char *base = cache_base(req, why, sizeof why);
    if (!base) {
        snprintf(text, sizeof text, "%s\n", why);
        return admin_reply_text(req->conn, 400, text);
    }
    struct rewrite_job *x = calloc(1, sizeof *x);
    if (!x) {
        free(base);
        return admin_reply_text(req->conn, 500, "out of memory\n");
    }
    struct manifest_opts o = {.cache_base = base, .allow = manifest_allow_cfg,
                              .allow_ctx = (void *)req->e->cfg,
                              .max_bytes = req->e->cfg->manifest_max_bytes};
    int rc = manifest_rewrite(req->body ? req->body : "", req->len, &o, &x->res, &err);
    free(base);
    if (rc != 0) {
        free(x);
        snprintf(text, sizeof text, "%s\n", err.message);
        return admin_reply_text(req->conn, (unsigned)err.status, text);
    }
    if (build_expectations(x->res.files, x->res.n_files, &x->exp, &x->n_exp) != 0) {
        rewrite_destroy(&x->base);
        return admin_reply_text(req->conn, 500, "out of memory\n");
    }
    x->prefetch = prefetch;
    x->answer_doc = answer_doc;
    x->from_peer = forward_from_peer(req->conn);
    if (((req->e->cfg->parent_admin_url && req->e->cfg->parent_admin_url[0]) || req->e->peers)
        && !x->from_peer && (x->body = malloc(req->len + 1))) {
        memcpy(x->body, req->body ? req->body : "", req->len);
        x->body_len = req->len;
    }
    x->base.run = rewrite_run;
    x->base.finish = rewrite_finish;
    x->base.destroy = rewrite_destroy;
    return admin_job_start(req, &x->base);
}
