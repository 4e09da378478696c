/*
 * http — the data plane: what devices ask for (DESIGN.md §1, §2).
 *
 * Each request is a struct http_req, created when MHD has parsed the request
 * line (we keep the raw request-target: the cache key is made from it, not
 * from MHD's decoded path) and freed when MHD reports it complete. A request
 * is answered in one of three ways:
 *   hit    the key is in the index and its blob opens: sendfile from the blob
 *   fill   a fill for the key runs (collapsed) or is started (miss); the
 *          request waits, suspended, for the upstream's headers, then is
 *          answered by a struct http_stream that reads the fill's temp file
 *          as bytes arrive, suspending whenever it has caught up
 *   error  4xx/5xx with a one-line text body naming what to change
 *
 * Suspension: a suspended connection is on exactly one fill's wait list, and
 * only the fill's wake resumes it. Nothing polls.
 *
 * Thread: loop thread only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cache/digest.h"
#include "cache/fill.h"
#include "cache/index.h"
#include "cache/lookup.h"
#include "cache/route.h"
#include "server/edge.h"
#include "cache/http_range.h"
#include "server/relay.h"
#include "version.h"

#define REQ_MAGIC 0x52657121u
#define STREAM_MAGIC 0x53747221u
#define STREAM_BLOCK (64 * 1024)

enum join_kind { JOIN_MISS, JOIN_COLLAPSED };

struct http_req {
    unsigned magic;
    struct edge *e;
    struct MHD_Connection *conn;
    char *target;                   /* raw request-target */
    struct route_target rt;
    int routed;
    struct fill *fill;              /* while waiting for the fill's headers */
    struct fill_waiter waiter;
    enum join_kind kind;
    struct relay *relay;            /* a method other than GET/HEAD being relayed */
    unsigned refuse_status;         /* decided when the request came; answered after its body */
    char *refuse_reason;
    struct lookup_result stale;     /* a stored response being revalidated */
    int has_stale;
    struct index_expected expect;   /* the key's expectation, when has_expect */
    int has_expect;
    int is_head;
    int headers_seen;               /* the access handler was called once */
    uint64_t cache_bytes;           /* body bytes of a sendfile answer */
    uint64_t *cache_bytes_counter;  /* where they count once sent */
};

/* The body of an answer that reads a fill while it runs. */
struct http_stream {
    unsigned magic;
    struct edge *e;
    struct MHD_Connection *conn;
    struct fill *fill;              /* a reference */
    struct fill_waiter waiter;
    uint64_t first;                 /* window in the representation */
    uint64_t len;                   /* UINT64_MAX: unknown (chunked) */
};

/* What every answer about a representation carries. */
struct repr {
    uint64_t size;
    const char *content_type;
    int64_t last_modified;
    const char *sha256_hex;         /* NULL when not known yet */
    const char *cache_status;
    int64_t age;
    const char *cache_control;      /* the origin's, passed on; may be NULL */
};

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **req_cls);
static enum MHD_Result serve_from_fill(struct http_req *r);
static enum MHD_Result serve(struct http_req *r);
static enum MHD_Result start_fill(struct http_req *r);

/* ---- small helpers ---------------------------------------------------------- */

static const char *header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

static enum MHD_Result respond_text(struct http_req *r, unsigned status, const char *text)
{
    char body[1200];
    int n = snprintf(body, sizeof body, "%s\n", text);
    if (n < 0 || (size_t)n >= sizeof body)
        n = (int)sizeof body - 1;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    if (status >= 400)
        r->e->stats.req_error++;
    log_msg(&r->e->log, status >= 500 ? LOG_WARN : LOG_INFO, "http", "%u %s: %s", status,
            r->target ? r->target : "-", text);
    return ret;
}

static void add_repr_headers(struct MHD_Response *resp, const struct repr *rp)
{
    char buf[128];
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            rp->content_type ? rp->content_type : "application/octet-stream");
    if (rp->last_modified > 0) {
        http_date_format((time_t)rp->last_modified, buf, sizeof buf);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LAST_MODIFIED, buf);
    }
    if (rp->sha256_hex) {
        unsigned char bin[DIGEST_SHA256_LEN];
        char b64[DIGEST_SHA256_B64];
        snprintf(buf, sizeof buf, "\"%s\"", rp->sha256_hex);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, buf);
        if (digest_from_hex(rp->sha256_hex, bin, sizeof bin) == 0) {
            digest_base64(bin, sizeof bin, b64);
            snprintf(buf, sizeof buf, "sha-256=:%s:", b64);
            MHD_add_response_header(resp, "Repr-Digest", buf);
        }
    }
    snprintf(buf, sizeof buf, "%lld", (long long)(rp->age > 0 ? rp->age : 0));
    MHD_add_response_header(resp, MHD_HTTP_HEADER_AGE, buf);
    MHD_add_response_header(resp, "Cache-Status", rp->cache_status);
    if (rp->cache_control)          /* what the origin says holds for caches below us too */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, rp->cache_control);
}

static enum MHD_Result queue(struct http_req *r, unsigned status, struct MHD_Response *resp,
                             const struct repr *rp)
{
    if (!resp)
        return respond_text(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    add_repr_headers(resp, rp);
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static char *etag_of(const char *sha256_hex, char *buf, size_t len)
{
    if (!sha256_hex)
        return NULL;
    snprintf(buf, len, "\"%s\"", sha256_hex);
    return buf;
}

/* 304 when the client's validators say it has this representation. */
static int not_modified(struct http_req *r, const struct repr *rp)
{
    char etag[80];
    const char *inm = header(r->conn, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm)
        return rp->sha256_hex && http_if_none_match(inm, etag_of(rp->sha256_hex, etag, sizeof etag));
    return http_not_modified_since(header(r->conn, MHD_HTTP_HEADER_IF_MODIFIED_SINCE),
                                   (time_t)rp->last_modified);
}

/* The byte window to send, or 416. Honours If-Range. */
static enum http_range_result choose_range(struct http_req *r, const struct repr *rp,
                                           struct http_range *range)
{
    char etag[80];
    const char *h = header(r->conn, MHD_HTTP_HEADER_RANGE);
    const char *if_range = header(r->conn, MHD_HTTP_HEADER_IF_RANGE);
    if (!h)
        return HTTP_RANGE_NONE;
    if (if_range) {
        const char *cur = rp->sha256_hex ? etag_of(rp->sha256_hex, etag, sizeof etag) : "";
        if (!http_if_range(if_range, cur, (time_t)rp->last_modified))
            return HTTP_RANGE_NONE;
    }
    return http_range_parse(h, rp->size, range);
}

static enum MHD_Result respond_416(struct http_req *r, const struct repr *rp)
{
    char buf[64];
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    snprintf(buf, sizeof buf, "bytes */%llu", (unsigned long long)rp->size);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_RANGE, buf);
    r->e->stats.req_error++;
    return queue(r, MHD_HTTP_RANGE_NOT_SATISFIABLE, resp, rp);
}

static enum MHD_Result respond_304(struct http_req *r, const struct repr *rp)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    return queue(r, MHD_HTTP_NOT_MODIFIED, resp, rp);
}

static void add_content_range(struct MHD_Response *resp, const struct http_range *range,
                              uint64_t total)
{
    char buf[96];
    snprintf(buf, sizeof buf, "bytes %llu-%llu/%llu", (unsigned long long)range->first,
             (unsigned long long)range->last, (unsigned long long)total);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_RANGE, buf);
}

/*
 * A complete representation readable from fd (a blob, or a finished fill):
 * validators, range, then sendfile. Takes ownership of fd.
 */
static enum MHD_Result answer_from_fd(struct http_req *r, int fd, const struct repr *rp,
                                      uint64_t *bytes_counter)
{
    struct http_range range;
    if (not_modified(r, rp)) {
        close(fd);
        return respond_304(r, rp);
    }
    enum http_range_result rr = choose_range(r, rp, &range);
    if (rr == HTTP_RANGE_UNSATISFIABLE) {
        close(fd);
        return respond_416(r, rp);
    }
    uint64_t first = rr == HTTP_RANGE_OK ? range.first : 0;
    uint64_t len = rr == HTTP_RANGE_OK ? range.last - range.first + 1 : rp->size;
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64(len, fd, first);
    if (!resp) {
        close(fd);
        return respond_text(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot create a response");
    }
    if (rr == HTTP_RANGE_OK)
        add_content_range(resp, &range, rp->size);
    r->cache_bytes = r->is_head ? 0 : len;
    r->cache_bytes_counter = bytes_counter;
    return queue(r, rr == HTTP_RANGE_OK ? MHD_HTTP_PARTIAL_CONTENT : MHD_HTTP_OK, resp, rp);
}

/* ---- hits --------------------------------------------------------------------- */

/* A hit (or a hit by hash): validators, range, then sendfile from the blob. */
static enum MHD_Result serve_stored(struct http_req *r, struct lookup_result *lk,
                                    const char *cache_status)
{
    struct edge *e = r->e;
    int64_t now = (int64_t)time(NULL);
    int by_hash = lk->kind == LOOKUP_BY_HASH;
    const char *sha = by_hash ? lk->expected.sha256 : lk->entry.sha256;
    struct repr rp = {
        .size = lk->size,
        .content_type = by_hash ? NULL : lk->entry.content_type,
        .last_modified = by_hash ? 0 : lk->entry.last_modified,
        .sha256_hex = sha,
        .cache_status = cache_status ? cache_status
                        : by_hash ? "edgecache; hit; detail=by-hash" : "edgecache; hit",
        .age = by_hash ? 0 : now - lk->entry.stored_at,
        .cache_control = by_hash ? NULL : lk->entry.cache_control,
    };
    index_touch(e->index, sha, now);
    e->stats.req_hit++;
    if (by_hash)
        e->stats.hits_by_hash++;
    int fd = lk->fd;
    lk->fd = -1;                    /* answer_from_fd owns it now */
    return answer_from_fd(r, fd, &rp, &e->stats.bytes_sent_cache);
}

/* ---- fills: joining, waiting, streaming ----------------------------------------- */

static void req_wake(struct fill_waiter *w)
{
    struct http_req *r = (struct http_req *)((char *)w - offsetof(struct http_req, waiter));
    mhduv_resume(&r->e->data_uv, r->conn);
}

static void stream_wake(struct fill_waiter *w)
{
    struct http_stream *s = (struct http_stream *)((char *)w - offsetof(struct http_stream, waiter));
    mhduv_resume(&s->e->data_uv, s->conn);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct http_stream *s = cls;
    struct fill_info fi;
    fill_info(s->fill, &fi);
    if (fi.state == FILL_FAILED)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (s->len != UINT64_MAX && pos >= s->len)
        return MHD_CONTENT_READER_END_OF_STREAM;
    /* A body of unknown length ends once the fill has all its bytes,
     * verified (committing or done). */
    if (s->len == UINT64_MAX && (fi.state == FILL_COMMITTING || fi.state == FILL_DONE)
        && s->first + pos >= fi.received)
        return MHD_CONTENT_READER_END_OF_STREAM;
    uint64_t off = s->first + pos;
    uint64_t avail = fill_readable(s->fill);
    if (avail > off) {
        uint64_t n = avail - off;
        if (s->len != UINT64_MAX && n > s->len - pos)
            n = s->len - pos;
        if (n > max)
            n = max;
        if (fill_pread(s->fill, buf, (size_t)n, off) < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        s->e->stats.bytes_sent_fill += n;
        return (ssize_t)n;
    }
    if (fi.state == FILL_DONE)     /* nothing more will come */
        return s->len == UINT64_MAX ? MHD_CONTENT_READER_END_OF_STREAM
                                    : MHD_CONTENT_READER_END_WITH_ERROR;
    if (s->e->stopping)             /* nothing wakes a reader any more */
        return MHD_CONTENT_READER_END_WITH_ERROR;
    mhduv_suspend(&s->e->data_uv, s->conn);
    fill_wait(s->fill, &s->waiter);
    return 0;
}

static void stream_free(void *cls)
{
    struct http_stream *s = cls;
    fill_unref(&s->fill, &s->waiter);
    s->magic = 0;
    free(s);
}

/* Suspends the request until its fill moves on; once the daemon is
 * stopping, nothing would wake it: the answer is a 503 instead. */
static enum MHD_Result wait_for_fill(struct http_req *r)
{
    if (r->e->stopping) {
        fill_unref(&r->fill, &r->waiter);
        return respond_text(r, MHD_HTTP_SERVICE_UNAVAILABLE, "edgecache is shutting down");
    }
    mhduv_suspend(&r->e->data_uv, r->conn);
    fill_wait(r->fill, &r->waiter);
    return MHD_YES;
}

static const char *join_status(const struct http_req *r)
{
    return r->kind == JOIN_MISS ? "edgecache; fwd=miss; stored" : "edgecache; fwd=miss; collapsed";
}

static enum MHD_Result answer_pass(struct http_req *r, const struct fill_info *fi)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(fi->pass_len, (void *)fi->pass_body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    if (fi->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, fi->content_type);
    MHD_add_response_header(resp, "Cache-Status", "edgecache; fwd=miss; detail=not-stored");
    r->e->stats.req_pass++;
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)fi->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* The fill has its 2xx headers: answer from its bytes as they come. */
static enum MHD_Result answer_streaming(struct http_req *r, const struct fill_info *fi)
{
    struct repr rp = {
        .size = fi->total,
        .content_type = fi->content_type,
        .last_modified = fi->last_modified,
        .sha256_hex = fi->sha256_hex,
        .cache_status = join_status(r),
        .cache_control = fi->cache_control,
    };
    struct http_range range;
    if (!fi->has_total && header(r->conn, MHD_HTTP_HEADER_RANGE) && fi->state != FILL_DONE) {
        return wait_for_fill(r);    /* a range of an unknown length: wait for the end */
    }
    if (r->kind == JOIN_MISS)       /* counted by how it is answered: from the fill */
        r->e->stats.req_miss++;
    else
        r->e->stats.req_collapsed++;
    if (fi->has_total && not_modified(r, &rp))
        return respond_304(r, &rp);
    enum http_range_result rr = fi->has_total ? choose_range(r, &rp, &range) : HTTP_RANGE_NONE;
    if (rr == HTTP_RANGE_UNSATISFIABLE)
        return respond_416(r, &rp);
    struct http_stream *s = calloc(1, sizeof *s);
    if (!s)
        return respond_text(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    s->magic = STREAM_MAGIC;
    s->e = r->e;
    s->conn = r->conn;
    s->waiter.wake = stream_wake;
    s->first = rr == HTTP_RANGE_OK ? range.first : 0;
    s->len = rr == HTTP_RANGE_OK ? range.last - range.first + 1
             : fi->has_total     ? fi->total
                                 : UINT64_MAX;
    s->fill = r->fill;              /* the request's reference moves to the stream */
    r->fill = NULL;
    struct MHD_Response *resp = MHD_create_response_from_callback(
        s->len == UINT64_MAX ? MHD_SIZE_UNKNOWN : s->len, STREAM_BLOCK, stream_read, s, stream_free);
    if (!resp) {
        stream_free(s);
        return respond_text(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    }
    if (rr == HTTP_RANGE_OK)
        add_content_range(resp, &range, fi->total);
    return queue(r, rr == HTTP_RANGE_OK ? MHD_HTTP_PARTIAL_CONTENT : MHD_HTTP_OK, resp, &rp);
}

/* ---- freshness: fresh hits, revalidation, stale-if-error ------------------------- */

static int is_fresh(const struct index_entry *ent, int64_t now)
{
    return ent->fresh_until == INT64_MAX || now < ent->fresh_until;
}

/* The stale response kept while its revalidation runs may stand in for an
 * upstream that failed: within stale_if_error (the config's bound, or the
 * response's own when shorter). */
static int stale_usable(const struct http_req *r, int64_t now)
{
    if (!r->has_stale)
        return 0;
    const struct index_entry *ent = &r->stale.entry;
    int64_t bound = (int64_t)(r->e->cfg->stale_if_error_ms / 1000);
    if (ent->stale_if_error >= 0 && ent->stale_if_error < bound)
        bound = ent->stale_if_error;
    return now - ent->fresh_until < bound;
}

static enum MHD_Result serve_stale(struct http_req *r, const char *cache_status)
{
    r->e->stats.stale_served++;
    log_msg(&r->e->log, LOG_INFO, "http", "%s: the upstream failed; served stale", r->rt.key);
    return serve_stored(r, &r->stale, cache_status);
}

/* The fill got a 304: the stored response it asked about is good. A
 * request that kept the same stored copy serves its own; another opens the
 * fill's. When that blob is gone (evicted, purged), the fill cannot serve
 * this request: it leaves the table and a full fill starts. */
static enum MHD_Result serve_revalidated(struct http_req *r, const struct fill_info *fi)
{
    const char *status = "edgecache; fwd=stale; fwd-status=304";
    const struct index_entry *ent = fi->stale;
    if (r->has_stale && strcmp(r->stale.entry.sha256, ent->sha256) == 0)
        return serve_stored(r, &r->stale, status);
    struct lookup_result lk = {.kind = LOOKUP_HIT, .fd = -1};
    lk.fd = store_blob_open(&r->e->store, ent->sha256, &lk.size);
    if (lk.fd >= 0 && lk.size == ent->size && index_entry_copy(&lk.entry, ent) == 0) {
        enum MHD_Result ret = serve_stored(r, &lk, status);
        lookup_result_free(&lk);
        return ret;
    }
    if (lk.fd >= 0)
        close(lk.fd);
    log_msg(&r->e->log, LOG_INFO, "http", "%s: the revalidated copy (blob %s) is gone: "
            "fetching it whole", r->rt.key, ent->sha256);
    fill_detach(r->fill);
    fill_unref(&r->fill, &r->waiter);
    if (r->has_stale) {
        lookup_result_free(&r->stale);
        r->has_stale = 0;
    }
    return start_fill(r);
}

static enum MHD_Result serve_from_fill(struct http_req *r)
{
    struct fill_info fi;
    fill_info(r->fill, &fi);
    enum MHD_Result ret;
    int64_t now = (int64_t)time(NULL);
    switch (fi.state) {
    case FILL_CONNECTING:
        return wait_for_fill(r);
    case FILL_REVALIDATED:
        return serve_revalidated(r, &fi);
    case FILL_FAILED:
        if (stale_usable(r, now))
            ret = serve_stale(r, "edgecache; fwd=stale; detail=stale-if-error");
        else
            ret = respond_text(r, fi.error_status ? (unsigned)fi.error_status : 502, fi.error);
        break;
    case FILL_PASS:
        if (fi.status >= 500 && stale_usable(r, now))
            ret = serve_stale(r, "edgecache; fwd=stale; detail=stale-if-error");
        else
            ret = answer_pass(r, &fi);
        break;
    default:
        ret = answer_streaming(r, &fi);
        break;
    }
    fill_unref(&r->fill, &r->waiter);
    return ret;
}

/* A new fill for the request's key (there is none in the table). */
static enum MHD_Result start_fill(struct http_req *r)
{
    char reason[512];
    int status;
    struct fill_request rq = {
        .key = r->rt.key, .origin_url = r->rt.origin_url,
        .expect = r->has_expect ? &r->expect : NULL,
        .via = header(r->conn, MHD_HTTP_HEADER_VIA),
        .stale = r->has_stale ? &r->stale.entry : NULL,
    };
    r->fill = fills_start(r->e->fills, &rq, &status, reason, sizeof reason);
    if (!r->fill && stale_usable(r, (int64_t)time(NULL)))
        return serve_stale(r, "edgecache; fwd=stale; detail=stale-if-error");
    if (!r->fill)
        return respond_text(r, (unsigned)status, reason);
    r->kind = JOIN_MISS;
    return serve_from_fill(r);
}

static enum MHD_Result serve(struct http_req *r)
{
    struct edge *e = r->e;
    enum MHD_Result ret;
    struct lookup_result lk;
    struct lookup_env env = {e->loop, &e->store, e->index, &e->log};
    lookup_key(&env, r->rt.key, r->rt.origin_url, &lk);
    if (lk.kind == LOOKUP_BY_HASH
        || (lk.kind == LOOKUP_HIT && is_fresh(&lk.entry, (int64_t)time(NULL)))) {
        ret = serve_stored(r, &lk, NULL);
        lookup_result_free(&lk);
        return ret;
    }
    r->has_expect = lk.has_expectation;
    r->expect = lk.expected;
    if (lk.kind == LOOKUP_HIT) {    /* stale: kept while it is revalidated */
        r->stale = lk;
        r->has_stale = 1;
        lk.kind = LOOKUP_MISS;
        lk.fd = -1;
    }
    r->fill = fills_find(e->fills, r->rt.key);
    if (r->fill && !r->has_stale) {
        struct fill_info fi;
        fill_info(r->fill, &fi);
        if (fi.revalidating) {      /* it can only confirm a copy this request cannot use */
            fill_detach(r->fill);
            r->fill = NULL;
        }
    }
    if (!r->fill)
        return start_fill(r);
    fill_ref(r->fill);
    r->kind = JOIN_COLLAPSED;
    return serve_from_fill(r);
}

/* True when a Via field names node_id as a recipient ("1.1 node_id ..."). */
static int via_holds(const char *via, const char *node_id)
{
    size_t n = strlen(node_id);
    for (const char *p = via; p && *p;) {
        p += strspn(p, " \t,");
        const char *end = p + strcspn(p, ",");
        const char *by = p + strcspn(p, " \t");       /* skip the protocol */
        by += strspn(by, " \t");
        if (by < end && strncasecmp(by, node_id, n) == 0
            && (by + n == end || by[n] == ' ' || by[n] == '\t' || by[n] == ','))
            return 1;
        p = end;
    }
    return 0;
}

/* ---- MHD callbacks ---------------------------------------------------------------- */

/* What a new request is: 0 to serve it (GET, HEAD) or relay it (r->relay
 * set), else the status to refuse it with (reason filled). */
static unsigned decide(struct http_req *r, const char *method, char *reason, size_t len)
{
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (via_holds(header(r->conn, MHD_HTTP_HEADER_VIA), r->e->cfg->node_id)) {
        r->e->stats.loops_refused++;
        snprintf(reason, len, "loop: this request already passed through %s (Via); "
                 "check the parent settings of the caches in its Via", r->e->cfg->node_id);
        return MHD_HTTP_LOOP_DETECTED;
    }
    memset(&r->rt, 0, sizeof r->rt);
    switch (route_resolve(r->e->cfg, r->target, &r->rt, reason, len)) {
    case ROUTE_OK:
        break;
    case ROUTE_FORBIDDEN:
        return MHD_HTTP_FORBIDDEN;
    case ROUTE_NOT_FOUND:
        return MHD_HTTP_NOT_FOUND;
    default:
        return MHD_HTTP_BAD_REQUEST;
    }
    if (get)
        return 0;
    if (r->rt.shape == ROUTE_SHAPE_DO) {
        snprintf(reason, len, "method %s is not allowed on a Delivery Optimization request: "
                 "edgecache serves GET and HEAD there (other methods are relayed on routes "
                 "and as a forward proxy)", method);
        return MHD_HTTP_METHOD_NOT_ALLOWED;
    }
    r->relay = relay_start(r->e, r->conn, method, &r->rt, reason, len);
    return r->relay ? 0 : MHD_HTTP_BAD_GATEWAY;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **req_cls)
{
    struct http_req *r = *req_cls;
    char reason[512];
    (void)cls, (void)url, (void)version, (void)conn;
    if (!r || r->magic != REQ_MAGIC)
        return MHD_NO;
    if (r->fill)                    /* resumed: the fill moved on */
        return serve_from_fill(r);
    if (r->relay)
        return relay_continue(r->relay, upload, upload_size);
    if (!r->headers_seen) {
        /* MHD closes the connection after an answer queued from the first
         * call (it has not yet read the request to its end): answer from
         * the second, which keeps connections alive between requests. */
        r->headers_seen = 1;
        return MHD_YES;
    }
    if (!r->routed) {
        r->routed = 1;
        r->is_head = strcmp(method, "HEAD") == 0;
        r->refuse_status = decide(r, method, reason, sizeof reason);
        if (r->refuse_status && !(r->refuse_reason = strdup(reason)))
            return MHD_NO;
        if (r->relay)
            return relay_continue(r->relay, upload, upload_size);
    }
    if (*upload_size) {             /* a body nobody relays: read and dropped */
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->refuse_status)
        return respond_text(r, r->refuse_status, r->refuse_reason);
    return serve(r);
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct http_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->magic = REQ_MAGIC;
    r->e = cls;
    r->conn = conn;
    r->target = strdup(uri);
    r->waiter.wake = req_wake;
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_req *r = *req_cls;
    (void)cls, (void)conn;
    if (!r)
        return;
    *req_cls = NULL;
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && r->cache_bytes_counter)
        *r->cache_bytes_counter += r->cache_bytes;
    fill_unref(&r->fill, &r->waiter);
    if (r->has_stale)
        lookup_result_free(&r->stale);
    relay_release(&r->relay);
    free(r->refuse_reason);
    if (r->routed)
        route_target_free(&r->rt);
    free(r->target);
    r->magic = 0;
    free(r);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    struct edge *e = cls;
    (void)conn, (void)socket_ctx;
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        e->stats.connections++;
    else
        e->stats.connections--;
}

int http_start(struct edge *e, char *err, size_t errlen)
{
    struct MHD_OptionItem extra[] = {
        {MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, e},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, e},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, e},
        {MHD_OPTION_END, 0, NULL},
    };
    e->data_daemon = edge_listen(e, &e->cfg->listen, (unsigned)e->cfg->max_connections,
                                 on_request, e, extra, err, errlen);
    if (!e->data_daemon)
        return -1;
    int rc = mhduv_start(&e->data_uv, e->loop, e->data_daemon);
    if (rc) {
        snprintf(err, errlen, "listen: %s", uv_strerror(rc));
        return -1;
    }
    return 0;
}

void http_stop(struct edge *e)
{
    if (!e->data_daemon)
        return;
    /* Closing the fills wakes every reader, whatever its fill's state, and
     * stopping the relays wakes theirs; MHD then runs until it has acted on
     * every resume (it aborts when stopped with a connection suspended). */
    relay_stop_all(e);
    fills_close(&e->fills);
    unsigned left = mhduv_drain(&e->data_uv, 16);
    if (left)
        log_msg(&e->log, LOG_ERROR, "http", "%u connections still suspended at shutdown", left);
    mhduv_stop(&e->data_uv, NULL);
    MHD_stop_daemon(e->data_daemon);
    e->data_daemon = NULL;
}
