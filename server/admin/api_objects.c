/*
 * The store on the control plane (DESIGN.md §7):
 *   GET /api/v1/objects[?limit=N&after=SHA256]   the stored blobs, in sha256
 *       order, with size, times, hits, pin count, how each was verified and
 *       the origin URLs that map to it; "next" continues the listing
 *   DELETE /api/v1/objects/{sha256}              purge a blob (a recalled
 *       image, say): its file and every index row that points at it
 * Both run on the thread pool; a reader of a purged blob finishes.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/catalog.h"
#include "cache/digest.h"
#include "cache/index.h"
#include "cache/stats.h"
#include "cache/store.h"
#include "server/admin/api.h"

#define LIST_DEFAULT 100
#define LIST_MAX 1000

struct objects_job {
    struct admin_job base;          /* first */
    char after[DIGEST_SHA256_HEX];
    unsigned limit;
    json_t *list;                   /* GET: built on the pool */
    char last[DIGEST_SHA256_HEX];
    int count;
    char sha256[DIGEST_SHA256_HEX]; /* DELETE */
    int found;
    uint64_t size;
    uint64_t seq;                   /* the store's number of the removal */
};

static void listing_json(void *ctx, const struct index_listing *l)
{
    struct objects_job *x = ctx;
    json_t *urls = json_array();
    for (const char *p = l->urls; p && *p;) {
        size_t n = strcspn(p, "\n");
        json_array_append_new(urls, json_stringn(p, n));
        p += n + (p[n] == '\n');
    }
    json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:i, s:o}", "sha256", l->sha256, "size",
                          (json_int_t)l->size, "created", (json_int_t)l->created,
                          "last_access", (json_int_t)l->last_access, "hits",
                          (json_int_t)l->hits, "pinned", l->pinned, "urls", urls);
    json_object_set_new(o, "verified_by", l->verified_by ? json_string(l->verified_by)
                                                         : json_null());
    json_array_append_new(x->list, o);
    snprintf(x->last, sizeof x->last, "%s", l->sha256);
}

static void list_run(struct admin_job *j)
{
    struct objects_job *x = (struct objects_job *)j;
    x->count = index_list_objects(j->e->index, x->after, x->limit, listing_json, x);
}

static void list_finish(struct admin_job *j)
{
    struct objects_job *x = (struct objects_job *)j;
    if (!j->req)
        return;
    if (x->count < 0) {
        admin_answer(j->req, 500, "text/plain", "the index could not be read (see the log)\n");
        return;
    }
    json_t *o = json_pack("{s:O, s:o}", "objects", x->list, "next",
                          (unsigned)x->count == x->limit ? json_string(x->last) : json_null());
    char *raw = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    char *text = raw ? log_redact_dup(raw) : NULL;  /* the URLs' credentials never leave */
    free(raw);
    admin_answer(j->req, text ? 200 : 500, "application/json", text ? text : "{}");
    free(text);
}

static int drop_rows(void *ctx)
{
    struct admin_job *j = ctx;
    return index_drop_object(j->e->index, ((struct objects_job *)j)->sha256);
}

static void purge_run(struct admin_job *j)
{
    struct objects_job *x = (struct objects_job *)j;
    x->found = index_object_size(j->e->index, x->sha256, &x->size);
    if (x->found != 1)
        return;
    /* file and rows together, never between a commit's two halves */
    if (store_blob_remove_recorded(&j->e->store, x->sha256, drop_rows, j, &x->seq) == -EIO)
        x->found = -1;
}

static void purge_finish(struct admin_job *j)
{
    struct objects_job *x = (struct objects_job *)j;
    struct stats *st = &j->e->stats;
    char text[200];
    if (x->found == 1) {
        catalog_blob_removed_at(j->e->catalog, x->sha256, x->seq);  /* counts objects, bytes */
        st->purged_objects++;
        log_msg(&j->e->log, LOG_INFO, "admin", "purged blob %s (%llu bytes)", x->sha256,
                (unsigned long long)x->size);
    }
    if (!j->req)
        return;
    if (x->found == 1) {
        snprintf(text, sizeof text, "{\"removed\":\"%s\",\"size\":%llu}\n", x->sha256,
                 (unsigned long long)x->size);
        admin_answer(j->req, 200, "application/json", text);
    } else if (x->found == 0) {
        snprintf(text, sizeof text, "no stored blob %s\n", x->sha256);
        admin_answer(j->req, 404, "text/plain", text);
    } else {
        admin_answer(j->req, 500, "text/plain", "the index could not be changed (see the log)\n");
    }
}

static void objects_destroy(struct admin_job *j)
{
    struct objects_job *x = (struct objects_job *)j;
    json_decref(x->list);
    free(x);
}

enum MHD_Result api_objects_list(struct admin_req *req)
{
    const char *limit = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "limit");
    const char *after = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "after");
    long n = limit ? strtol(limit, NULL, 10) : LIST_DEFAULT;
    if (n < 1 || n > LIST_MAX)
        return admin_reply_text(req->conn, 400, "limit must be 1..1000\n");
    if (after && !digest_is_sha256_hex(after))
        return admin_reply_text(req->conn, 400, "after must be a sha256 in lower-case hex\n");
    struct objects_job *x = calloc(1, sizeof *x);
    if (!x || !(x->list = json_array())) {
        free(x);
        return admin_reply_text(req->conn, 500, "out of memory\n");
    }
    x->limit = (unsigned)n;
    snprintf(x->after, sizeof x->after, "%s", after ? after : "");
    x->base.run = list_run;
    x->base.finish = list_finish;
    x->base.destroy = objects_destroy;
    return admin_job_start(req, &x->base);
}

enum MHD_Result api_objects_delete(struct admin_req *req, const char *sha256)
{
    if (!digest_is_sha256_hex(sha256))
        return admin_reply_text(req->conn, 400, "the object is named by its sha256 in "
                                                "lower-case hex\n");
    struct objects_job *x = calloc(1, sizeof *x);
    if (!x)
        return admin_reply_text(req->conn, 500, "out of memory\n");
    snprintf(x->sha256, sizeof x->sha256, "%s", sha256);
    x->base.run = purge_run;
    x->base.finish = purge_finish;
    x->base.destroy = objects_destroy;
    return admin_job_start(req, &x->base);
}
