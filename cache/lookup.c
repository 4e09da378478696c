/* lookup — see lookup.h. */
#include "cache/lookup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cache/catalog.h"
#include "cache/fill.h"
#include "cache/fresh.h"
#include "cache/stats.h"
#include "cache/store.h"

static void answer_init(struct lookup_answer *a)
{
    memset(a, 0, sizeof *a);
    a->fd = a->backup_fd = -1;
}

void lookup_answer_free(struct lookup_answer *a)
{
    if (a->fd >= 0)
        close(a->fd);
    if (a->backup_fd >= 0)
        close(a->backup_fd);
    cat_resp_unref(&a->resp);
    cat_resp_unref(&a->backup);
    fill_unref(&a->fill, NULL);
    answer_init(a);
}

int64_t lookup_age(const struct cat_resp *r, int64_t now)
{
    int64_t resident = now > r->stored_at ? now - r->stored_at : 0;
    return r->initial_age + resident;
}

static int is_fresh(const struct cat_resp *r, int64_t now)
{
    if (r->fresh_until == FRESH_FOREVER)
        return 1;
    return !(r->flags & CAT_ALWAYS_REVALIDATE) && now < r->fresh_until;
}

/* The request asks that a stored response be validated first (RFC 9111
 * §5.2.1.4, §5.2.1.1 with max-age=0, and HTTP/1.0's Pragma: no-cache). */
static int request_wants_validation(const struct hdr_source *req)
{
    if (!req || !req->get)
        return 0;
    const char *cc = req->get(req->ctx, "Cache-Control");
    if (cc) {
        struct fresh_directives d;
        fresh_parse(cc, &d);
        return d.no_cache || d.max_age == 0;
    }
    const char *pragma = req->get(req->ctx, "Pragma");
    return pragma && hdrs_list_has(pragma, "no-cache");
}

static int request_only_if_cached(const struct hdr_source *req)
{
    const char *cc = req && req->get ? req->get(req->ctx, "Cache-Control") : NULL;
    return cc && hdrs_list_has(cc, "only-if-cached");
}

static int out_of_fds(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOMEM;
}

/* Opens r's blob: fd, or -1 when it is missing or has another size, or -2
 * when the process has no file descriptor left (not the blob's fault:
 * fetching it again would not help). */
static int open_blob(const struct lookup_env *env, const struct cat_resp *r)
{
    uint64_t size = 0;
    int fd = store_blob_open(env->store, r->sha256, &size);
    if (fd >= 0 && size == r->size)
        return fd;
    if (fd < 0 && out_of_fds(errno)) {
        env->stats->resource_errors++;
        return -2;
    }
    if (fd >= 0)
        close(fd);
    log_msg(env->log, LOG_WARN, "lookup", "blob %s for %s is missing or has the wrong size: "
            "fetching again", r->sha256, r->key);
    return -1;
}

static void stored(struct lookup_answer *a, const struct cat_resp *r, int fd, int by_hash)
{
    a->verdict = LOOKUP_STORED;
    cat_resp_ref(r);
    a->resp = r;
    a->fd = fd;
    a->size = r->size;
    a->by_hash = by_hash;
}

/* A hit by hash: the key's expected SHA-256 is a blob the store holds. */
static int try_by_hash(const struct lookup_env *env, const struct lookup_request *rq,
                       const struct cat_expect *ex, struct lookup_answer *a)
{
    uint64_t size;
    if (!ex || !catalog_blob(env->catalog, ex->sha256, &size))
        return 0;
    if (ex->size >= 0 && (uint64_t)ex->size != size)
        return 0;
    int fd = store_blob_open(env->store, ex->sha256, &size);
    if (fd < 0)
        return 0;
    const struct cat_resp *r = catalog_map_blob(env->catalog, rq->key, rq->origin_url,
                                                ex->sha256, size);
    if (!r) {
        close(fd);
        return 0;
    }
    stored(a, r, fd, 1);
    return 1;
}

/* Starts a fill under name (NULL: for this request alone). */
static void start(const struct lookup_env *env, const struct lookup_request *rq,
                  const char *name, struct lookup_answer *a)
{
    int status = 503;
    struct fill_request fr = {
        .key = rq->key, .name = name, .origin_url = rq->origin_url,
        .expect = catalog_expectation(env->catalog, rq->key), .req = rq->req,
        .stale = a->backup,
        .keep = rq->req == NULL,        /* a prefetch keeps what it fetches */
    };
    a->fill = fills_start(env->fills, &fr, &status, a->reason, sizeof a->reason);
    if (a->fill) {
        a->verdict = LOOKUP_FILL;
        a->started = 1;
        return;
    }
    if (lookup_fall_back(env, a, rq->now))
        return;
    a->verdict = LOOKUP_REFUSE;
    a->status = (unsigned)status;
}

static void join(struct lookup_answer *a, struct fill *fl)
{
    fill_ref(fl);
    a->fill = fl;
    a->verdict = LOOKUP_FILL;
    a->started = 0;
}

/* The fill listed under name that can serve this request, joined; else
 * one started there (a listed one that cannot serve leaves the table). */
static void join_or_start(const struct lookup_env *env, const struct lookup_request *rq,
                          const char *name, int depth, struct lookup_answer *a)
{
    struct fill *fl = fills_find(env->fills, name);
    if (!fl) {
        start(env, rq, name, a);
        return;
    }
    struct fill_info fi;
    const char *why = "";
    fill_info(fl, &fi);
    if (fi.revalidating
        && (!a->backup || !fi.stale || strcmp(a->backup->sha256, fi.stale->sha256) != 0)) {
        /* it can only confirm a stored copy this request cannot use */
        fill_detach(fl);
        start(env, rq, name, a);
        return;
    }
    int late = fi.state != FILL_CONNECTING;
    if (fill_serves(fl, rq->req, late, rq->now, &why)) {
        join(a, fl);
        return;
    }
    char *other = depth == 0 ? fill_variant_name(fl, rq->req) : NULL;
    if (other && strcmp(other, name) != 0) {
        join_or_start(env, rq, other, depth + 1, a);
        free(other);
        return;
    }
    free(other);
    log_msg(env->log, LOG_DEBUG, "lookup", "%s: a fill runs but %s: fetching anew", rq->key, why);
    fill_detach(fl);
    start(env, rq, name, a);
}

void lookup_request(const struct lookup_env *env, const struct lookup_request *rq,
                    struct lookup_answer *out)
{
    answer_init(out);
    const struct cat_expect *ex = catalog_expectation(env->catalog, rq->key);
    const struct cat_resp *r = catalog_select(env->catalog, rq->key, rq->req, &out->vary_miss);
    if (r && ex && (r->status != 200 || strcmp(ex->sha256, r->sha256) != 0)) {
        log_msg(env->log, LOG_WARN, "lookup", "%s is stored as %ld, sha256 %s, but expected as "
                "sha256 %s (%s): not served, fetched again", rq->key, r->status, r->sha256,
                ex->sha256, ex->source);
        r = NULL;
    }
    int fd = r ? open_blob(env, r) : -1;
    if (fd == -2) {
        out->verdict = LOOKUP_REFUSE;
        out->status = 503;
        snprintf(out->reason, sizeof out->reason, "edgecache has no file descriptor left "
                 "to open %s (ulimit -n); try again shortly", rq->key);
        return;
    }
    if (r && fd < 0)
        r = NULL;
    if (r && is_fresh(r, rq->now)
        && !(r->fresh_until != FRESH_FOREVER && request_wants_validation(rq->req))) {
        stored(out, r, fd, 0);
        return;
    }
    if (r) {                        /* stale: revalidated, and kept to fall back on */
        cat_resp_ref(r);
        out->backup = r;
        out->backup_fd = fd;
    } else if (try_by_hash(env, rq, ex, out)) {
        return;
    }
    if (request_only_if_cached(rq->req) && !(out->backup && lookup_fall_back(env, out, rq->now))) {
        out->verdict = LOOKUP_REFUSE;
        out->status = 504;
        snprintf(out->reason, sizeof out->reason, "%s is not stored and the request says "
                 "only-if-cached", rq->key);
        return;
    }
    if (rq->req && rq->req->get && rq->req->get(rq->req->ctx, "Authorization")) {
        start(env, rq, NULL, out);  /* credentials may change the answer: never collapsed */
        return;
    }
    join_or_start(env, rq, rq->key, 0, out);
}

int lookup_fill_moved(const struct lookup_env *env, const struct lookup_request *rq,
                      struct lookup_answer *a)
{
    struct fill_info fi;
    const char *why = "";
    fill_info(a->fill, &fi);
    if (a->started || fill_serves(a->fill, rq->req, 0, rq->now, &why))
        return 1;                   /* the request a fill is for always takes its answer */
    /* another variant: its own name; an answer for its first request
     * alone: a fill for this request alone */
    struct fill *old = a->fill;
    char *other = fi.personal ? NULL : fill_variant_name(old, rq->req);
    a->fill = NULL;
    log_msg(env->log, LOG_DEBUG, "lookup", "%s: the fill it waited on cannot serve it (%s)",
            rq->key, why);
    if (other)
        join_or_start(env, rq, other, 1, a);
    else
        start(env, rq, NULL, a);
    free(other);
    fill_unref(&old, NULL);
    return 0;
}

int lookup_fall_back(const struct lookup_env *env, struct lookup_answer *a, int64_t now)
{
    const struct cat_resp *b = a->backup;
    if (!b || b->fresh_until == FRESH_FOREVER || (b->flags & CAT_NO_STALE) || a->backup_fd < 0)
        return 0;
    int64_t bound = (int64_t)(env->cfg->stale_if_error_ms / 1000);
    if (b->stale_if_error >= 0 && b->stale_if_error < bound)
        bound = b->stale_if_error;
    if (now - b->fresh_until >= bound)
        return 0;
    fill_unref(&a->fill, NULL);
    a->verdict = LOOKUP_STORED;
    a->resp = b;
    a->backup = NULL;
    a->fd = a->backup_fd;
    a->backup_fd = -1;
    a->size = b->size;
    a->stale = 1;
    env->stats->stale_served++;
    log_msg(env->log, LOG_INFO, "lookup", "%s: the upstream failed; served stale", b->key);
    return 1;
}

int lookup_use(const struct lookup_env *env, const struct cat_resp *resp,
               struct lookup_answer *a)
{
    int fd;
    if (a->backup && a->backup_fd >= 0 && strcmp(a->backup->sha256, resp->sha256) == 0) {
        fd = a->backup_fd;
        a->backup_fd = -1;
    } else if ((fd = open_blob(env, resp)) < 0) {
        return -1;
    }
    fill_unref(&a->fill, NULL);
    stored(a, resp, fd, 0);
    return 0;
}
