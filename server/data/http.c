/*
 * http — the data plane: what devices ask for (DESIGN.md §1, §2).
 *
 * Each request is a struct http_req, created when MHD has parsed the request
 * line (we keep the raw request-target: the cache key is made from it, not
 * from MHD's decoded path) and freed when MHD reports it complete. cache/
 * decides how it is answered (cache/lookup.h); this file renders that:
 *   stored  sendfile from the blob, with the stored response's fields
 *   fill    wait, suspended, for the fill's answer, then stream it from the
 *           fill's temp file as bytes arrive (struct http_stream),
 *           suspending whenever it has caught up
 *   refuse  4xx/5xx with a one-line text body naming what to change
 * Methods other than GET and HEAD are relayed (server/relay.c).
 *
 * What an answer carries: the stored (or received) end-to-end fields of the
 * origin's answer in their order, then edgecache's own, which replace any
 * the origin sent: Accept-Ranges, ETag (the SHA-256, when the origin gave
 * none), Repr-Digest, Age, Via, Cache-Status (RFC 9211: on an answer
 * streamed from upstream, ours follows the upstream's).
 *
 * Suspension: a suspended connection is on exactly one fill's wait list, and
 * only the fill's wake resumes it. Nothing polls.
 *
 * Connections (struct http_conn, MHD's socket context) are watched against
 * slow clients: between requests a connection may stay silent (or trickle
 * its request line) for client_timeout, a request's header block must be
 * complete within header_timeout of its line, and an answer must make
 * progress within client_timeout (MHD's own timeout). A connection past
 * its time is shut down (MHD then closes it). Past max_connections, a new
 * connection is answered 503 with Retry-After and closed; MHD itself takes
 * HTTP_CONN_HEADROOM more before it refuses outright.
 *
 * Thread: loop thread only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cache/catalog.h"
#include "cache/digest.h"
#include "cache/fill.h"
#include "cache/hdrs.h"
#include "cache/http_range.h"
#include "cache/index.h"
#include "cache/lookup.h"
#include "cache/route.h"
#include "server/edge.h"
#include "server/data/relay.h"
#include "version.h"

#define REQ_MAGIC 0x52657121u
#define STREAM_MAGIC 0x53747221u
#define SMALL_BODY (16 * 1024)     /* hits up to this size are read, not sent by sendfile */
#define STREAM_BLOCK (16 * 1024)   /* per fill reader: 1,000 joined clients hold 16 MiB, not 64 */
#define HTTP_CONN_HEADROOM 64
#define CONN_SCAN_MS 500

enum conn_phase { CONN_IDLE, CONN_HEADERS, CONN_ACTIVE };

struct http_conn {
    struct MHD_Connection *conn;
    struct http_conn *next, *prev;  /* the edge's connections */
    enum conn_phase phase;
    uint64_t since;                 /* uv_now() ms the phase began */
    int over_limit;                 /* opened past max_connections: answered 503 */
};

struct http_req {
    unsigned magic;
    struct edge *e;
    struct worker *w;               /* the worker whose connection it came on */
    struct MHD_Connection *conn;
    char *target;                   /* raw request-target */
    struct route_target rt;
    int routed;
    struct hdr_source fields;       /* the request's fields, read from MHD */
    struct lookup_answer a;         /* how it is answered */
    int answering;                  /* a is set */
    struct fill_waiter waiter;      /* while waiting for a.fill's answer */
    struct relay *relay;            /* a method other than GET/HEAD being relayed */
    unsigned refuse_status;         /* decided when the request came; answered after its body */
    char *refuse_reason;
    int is_head;
    int headers_seen;               /* the access handler was called once */
    struct http_conn *hc;           /* its connection */
    uint64_t t0;                    /* uv_hrtime() when its line came */
    enum stats_answer cls;          /* how it is answered, for the histogram */
    int timed;                      /* its time to first byte is counted */
    uint64_t cache_bytes;           /* body bytes of a sendfile answer */
    uint64_t *cache_bytes_counter;  /* where they count once sent */
};

/* The body of an answer that reads a fill while it runs. */
struct http_stream {
    unsigned magic;
    struct edge *e;
    struct worker *w;
    struct MHD_Connection *conn;
    struct fill *fill;              /* a reference */
    struct fill_waiter waiter;
    uint64_t first;                 /* window in the representation */
    uint64_t len;                   /* UINT64_MAX: unknown (chunked) */
};

/* What an answer about a representation is made of. */
struct repr {
    long status;
    const struct hdrs *hdrs;        /* the origin's fields (stored or received) */
    int initiator;                  /* the request that fetched it: all of them */
    const char *drop_fields;        /* else: these are not passed (may be NULL) */
    uint64_t size;
    const char *etag;               /* the origin's, or NULL */
    int64_t last_modified;
    const char *sha256_hex;         /* NULL when not known yet */
    int64_t age;
    const char *upstream_cs;        /* the upstream's Cache-Status, extended; or NULL */
    char cache_status[160];
};

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **req_cls);
static enum MHD_Result answer(struct http_req *r);

/* ---- the request's fields --------------------------------------------------- */

static const char *header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

static const char *fields_get(void *ctx, const char *name)
{
    return header(ctx, name);
}

struct each_ctx {
    int (*cb)(void *, const char *, const char *);
    void *arg;
};

static enum MHD_Result each_field(void *cls, enum MHD_ValueKind kind, const char *name,
                                  const char *value)
{
    struct each_ctx *c = cls;
    (void)kind;
    return c->cb(c->arg, name, value ? value : "") ? MHD_NO : MHD_YES;
}

static void fields_each(void *ctx, int (*cb)(void *, const char *, const char *), void *arg)
{
    struct each_ctx c = {cb, arg};
    MHD_get_connection_values(ctx, MHD_HEADER_KIND, each_field, &c);
}

static struct lookup_env lookup_env_of(struct edge *e)
{
    return (struct lookup_env){
        .cfg = e->cfg, .log = &e->log, .store = &e->store, .catalog = e->catalog,
        .fills = e->fills, .stats = &e->stats,
    };
}

static struct lookup_request lookup_req_of(struct http_req *r)
{
    return (struct lookup_request){
        .key = r->rt.key, .origin_url = r->rt.origin_url, .req = &r->fields,
        .now = (int64_t)time(NULL),
    };
}

/* ---- small answers ----------------------------------------------------------- */

/* The request's time to first byte: its answer's status line is queued. */
static void time_answer(struct http_req *r)
{
    if (r->timed)
        return;
    r->timed = 1;
    stats_observe(&r->e->stats.ttfb[r->cls], (double)(uv_hrtime() - r->t0) / 1e9);
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
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "5");
    if (r->e->draining || status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (status >= 400)
        r->cls = STATS_ERROR;
    time_answer(r);
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    if (status >= 400)
        r->e->stats.req_error++;
    log_msg(&r->e->log, status >= 500 ? LOG_WARN : LOG_INFO, "http", "%u %.300s: %s", status,
            r->target ? r->target : "-", text);
    return ret;
}

/* ---- the fields of an answer ------------------------------------------------------ */

/* Fields edgecache writes itself (or MHD does): never replayed. */
static int own_field(const char *name)
{
    static const char *const own[] = {
        "age", "cache-status", "repr-digest", "content-length", "accept-ranges",
        "content-range", "via", "transfer-encoding", "connection", "keep-alive",
    };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (strcasecmp(name, own[i]) == 0)
            return 1;
    return 0;
}

/* Fields only the request that fetched an answer is given. */
static int first_request_only(const struct repr *rp, const char *name)
{
    if (rp->initiator)
        return 0;
    return strcasecmp(name, "Set-Cookie") == 0 || strcasecmp(name, "Set-Cookie2") == 0
           || (rp->drop_fields && hdrs_list_has(rp->drop_fields, name));
}

/* A 304 carries only these of the representation's fields (RFC 9110 §15.4.5). */
static int kept_on_304(const char *name)
{
    static const char *const keep[] = {
        "cache-control", "content-location", "date", "etag", "expires", "vary",
        "last-modified",
    };
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if (strcasecmp(name, keep[i]) == 0)
            return 1;
    return 0;
}

static void add_fields(struct edge *e, struct MHD_Response *resp, unsigned status,
                       const struct repr *rp)
{
    char buf[1200], via[600];
    via[0] = '\0';
    for (unsigned i = 0; rp->hdrs && i < rp->hdrs->n; i++) {
        const char *name = hdrs_name(rp->hdrs, i), *value = hdrs_value(rp->hdrs, i);
        if (strcasecmp(name, "Via") == 0) {
            size_t n = strlen(via);
            snprintf(via + n, sizeof via - n, "%s%s", n ? ", " : "", value);
            continue;
        }
        if ((own_field(name) && !(rp->status == 206 && strcasecmp(name, "Content-Range") == 0))
            || first_request_only(rp, name))
            continue;
        if (status == MHD_HTTP_NOT_MODIFIED && !kept_on_304(name))
            continue;
        MHD_add_response_header(resp, name, value);
    }
    if (rp->status == 200 && status != MHD_HTTP_NOT_MODIFIED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
    if (rp->sha256_hex) {
        unsigned char bin[DIGEST_SHA256_LEN];
        char b64[DIGEST_SHA256_B64];
        if (!rp->etag) {
            snprintf(buf, sizeof buf, "\"%s\"", rp->sha256_hex);
            MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, buf);
        }
        if (status != MHD_HTTP_NOT_MODIFIED
            && digest_from_hex(rp->sha256_hex, bin, sizeof bin) == 0) {
            digest_base64(bin, sizeof bin, b64);
            snprintf(buf, sizeof buf, "sha-256=:%s:", b64);
            MHD_add_response_header(resp, "Repr-Digest", buf);
        }
    }
    snprintf(buf, sizeof buf, "%lld", (long long)(rp->age > 0 ? rp->age : 0));
    MHD_add_response_header(resp, MHD_HTTP_HEADER_AGE, buf);
    snprintf(buf, sizeof buf, "%s%s1.1 %s (edgecache/%s)", via, via[0] ? ", " : "",
             e->cfg->node_id, EDGECACHE_VERSION);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_VIA, buf);
    if (rp->upstream_cs) {
        snprintf(buf, sizeof buf, "%s, %s", rp->upstream_cs, rp->cache_status);
        MHD_add_response_header(resp, "Cache-Status", buf);
    } else {
        MHD_add_response_header(resp, "Cache-Status", rp->cache_status);
    }
}

static enum MHD_Result queue(struct http_req *r, unsigned status, struct MHD_Response *resp,
                             const struct repr *rp)
{
    if (!resp)
        return respond_text(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    add_fields(r->e, resp, status, rp);
    time_answer(r);
    if (r->e->draining)             /* stopping: this client should go elsewhere next */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- validators and ranges (a 200's) --------------------------------------------- */

/* 304 when the client's validators say it has this representation: its
 * If-None-Match may name the origin's ETag or ours (the SHA-256). */
static int not_modified(struct http_req *r, const struct repr *rp)
{
    char mine[80];
    const char *inm = header(r->conn, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (rp->status != 200)
        return 0;
    if (inm) {
        if (rp->etag && http_if_none_match(inm, rp->etag))
            return 1;
        if (!rp->sha256_hex)
            return 0;
        snprintf(mine, sizeof mine, "\"%s\"", rp->sha256_hex);
        return http_if_none_match(inm, mine);
    }
    return http_not_modified_since(header(r->conn, MHD_HTTP_HEADER_IF_MODIFIED_SINCE),
                                   (time_t)rp->last_modified);
}

/* The byte window to send, or 416. Honours If-Range (the origin's strong
 * ETag, ours, or the Last-Modified date). */
static enum http_range_result choose_range(struct http_req *r, const struct repr *rp,
                                           struct http_range *range)
{
    char mine[80];
    const char *h = header(r->conn, MHD_HTTP_HEADER_RANGE);
    const char *if_range = header(r->conn, MHD_HTTP_HEADER_IF_RANGE);
    if (!h || rp->status != 200)
        return HTTP_RANGE_NONE;
    if (if_range) {
        snprintf(mine, sizeof mine, "\"%s\"", rp->sha256_hex ? rp->sha256_hex : "");
        int ok = (rp->etag && http_if_range(if_range, rp->etag, (time_t)rp->last_modified))
                 || (rp->sha256_hex && http_if_range(if_range, mine, (time_t)rp->last_modified));
        if (!ok)
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

/* ---- stored answers ------------------------------------------------------------ */

static void cache_status(struct repr *rp, const char *fmt, const char *detail)
{
    snprintf(rp->cache_status, sizeof rp->cache_status, fmt, detail ? detail : "");
}

/* A stored response (a hit, a hit by hash, a revalidated or stale one):
 * validators, range, then sendfile from its blob. */
static enum MHD_Result answer_stored(struct http_req *r, const char *status_text)
{
    struct edge *e = r->e;
    struct lookup_answer *a = &r->a;
    const struct cat_resp *cr = a->resp;
    int64_t now = (int64_t)time(NULL);
    struct repr rp = {
        .status = cr->status, .hdrs = &cr->hdrs, .initiator = 0, .size = a->size,
        .etag = cr->etag, .last_modified = cr->last_modified, .sha256_hex = cr->sha256,
        .age = lookup_age(cr, now),
    };
    cache_status(&rp, "%s", status_text);
    r->cls = a->stale ? STATS_STALE : STATS_HIT;
    index_touch(e->index, cr->sha256, now);
    e->stats.req_hit++;
    if (a->by_hash)
        e->stats.hits_by_hash++;
    if (not_modified(r, &rp))
        return respond_304(r, &rp);
    struct http_range range;
    enum http_range_result rr = choose_range(r, &rp, &range);
    if (rr == HTTP_RANGE_UNSATISFIABLE)
        return respond_416(r, &rp);
    uint64_t first = rr == HTTP_RANGE_OK ? range.first : 0;
    uint64_t len = rr == HTTP_RANGE_OK ? range.last - range.first + 1 : rp.size;
    int fd = a->fd;
    a->fd = -1;                     /* the response owns it now */
    struct MHD_Response *resp = NULL;
    char *small = len <= SMALL_BODY && !r->is_head ? malloc(len ? len : 1) : NULL;
    if (small && pread(fd, small, len, (off_t)first) == (ssize_t)len) {
        /* a small body goes out with the header fields in one write */
        close(fd);
        fd = -1;
        resp = MHD_create_response_from_buffer(len, small, MHD_RESPMEM_MUST_FREE);
        if (!resp)
            free(small);
    } else {
        free(small);
        resp = MHD_create_response_from_fd_at_offset64(len, fd, first);
    }
    if (!resp) {
        if (fd >= 0)
            close(fd);
        return respond_text(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot create a response");
    }
    if (rr == HTTP_RANGE_OK)
        add_content_range(resp, &range, rp.size);
    r->cache_bytes = r->is_head ? 0 : len;
    r->cache_bytes_counter = &e->stats.bytes_sent_cache;
    unsigned st = rr == HTTP_RANGE_OK ? MHD_HTTP_PARTIAL_CONTENT : (unsigned)cr->status;
    return queue(r, st, resp, &rp);
}

static const char *stored_status(const struct lookup_answer *a)
{
    if (a->stale)
        return "edgecache; fwd=stale; detail=stale-if-error";
    return a->by_hash ? "edgecache; hit; detail=by-hash" : "edgecache; hit";
}

/* ---- answers from a fill ---------------------------------------------------------- */

static void req_wake(struct fill_waiter *w)
{
    struct http_req *r = (struct http_req *)((char *)w - offsetof(struct http_req, waiter));
    worker_resume(r->w, r->conn);
}

static void stream_wake(struct fill_waiter *w)
{
    struct http_stream *s = (struct http_stream *)((char *)w - offsetof(struct http_stream, waiter));
    worker_resume(s->w, s->conn);
}

static ssize_t stream_read_locked(struct http_stream *s, uint64_t pos, char *buf, size_t max)
{
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
    worker_suspend(s->w, s->conn);
    fill_wait(s->fill, &s->waiter);
    return 0;
}

/* MHD's callbacks take the edge's lock (server/edge.h); the fill's state
 * is main-loop state, so touching it may wake the main loop. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct http_stream *s = cls;
    edge_lock(s->e);
    worker_wake_main();
    ssize_t n = stream_read_locked(s, pos, buf, max);
    edge_unlock(s->e);
    return n;
}

static void stream_free(void *cls)
{
    struct http_stream *s = cls;
    struct edge *e = s->e;
    edge_lock(e);
    worker_wake_main();
    fill_unref(&s->fill, &s->waiter);
    s->magic = 0;
    free(s);
    edge_unlock(e);
}

/* Suspends the request until its fill moves on; once the daemon is
 * stopping, nothing would wake it: the answer is a 503 instead. */
static enum MHD_Result wait_for_fill(struct http_req *r)
{
    if (r->e->stopping)
        return respond_text(r, MHD_HTTP_SERVICE_UNAVAILABLE, "edgecache is shutting down");
    worker_suspend(r->w, r->conn);
    fill_wait(r->a.fill, &r->waiter);
    return MHD_YES;
}

static void fill_cache_status(const struct http_req *r, const struct fill_info *fi,
                              struct repr *rp)
{
    const struct lookup_answer *a = &r->a;
    char st[16];
    snprintf(st, sizeof st, "%ld", fi->status);
    if (a->backup)
        snprintf(rp->cache_status, sizeof rp->cache_status, "edgecache; fwd=stale; "
                 "fwd-status=%s%s", st, fi->storable ? "; stored" : "; detail=not-stored");
    else if (!a->started)
        snprintf(rp->cache_status, sizeof rp->cache_status, "edgecache; fwd=%s; collapsed%s",
                 a->vary_miss ? "vary-miss" : "miss", fi->storable ? "" : "; detail=not-stored");
    else
        snprintf(rp->cache_status, sizeof rp->cache_status, "edgecache; fwd=%s%s",
                 a->vary_miss ? "vary-miss" : "miss",
                 fi->storable ? "; stored" : "; detail=not-stored");
}

/* The fill has its answer's headers: answer from its bytes as they come. */
static enum MHD_Result answer_streaming(struct http_req *r, const struct fill_info *fi)
{
    struct edge *e = r->e;
    struct repr rp = {
        .status = fi->status, .hdrs = fi->hdrs, .initiator = r->a.started,
        .drop_fields = fi->drop_fields, .size = fi->total, .etag = fi->etag,
        .last_modified = fi->last_modified, .sha256_hex = fi->sha256_hex,
        .age = fi->initial_age, .upstream_cs = fi->upstream_cache_status,
    };
    fill_cache_status(r, fi, &rp);
    struct http_range range;
    if (!fi->has_total && fi->status == 200 && header(r->conn, MHD_HTTP_HEADER_RANGE)
        && fi->state != FILL_DONE)
        return wait_for_fill(r);    /* a range of an unknown length: wait for the end */
    if (!fi->storable)
        e->stats.req_pass++;
    else if (r->a.started)
        e->stats.req_miss++;
    else
        e->stats.req_collapsed++;
    r->cls = !fi->storable ? STATS_PASS : r->a.started ? STATS_MISS : STATS_COLLAPSED;
    if (fi->has_total && not_modified(r, &rp))
        return respond_304(r, &rp);
    enum http_range_result rr = fi->has_total ? choose_range(r, &rp, &range) : HTTP_RANGE_NONE;
    if (rr == HTTP_RANGE_UNSATISFIABLE)
        return respond_416(r, &rp);
    struct http_stream *s = calloc(1, sizeof *s);
    if (!s)
        return respond_text(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    s->magic = STREAM_MAGIC;
    s->e = e;
    s->w = r->w;
    s->conn = r->conn;
    s->waiter.wake = stream_wake;
    s->first = rr == HTTP_RANGE_OK ? range.first : 0;
    s->len = rr == HTTP_RANGE_OK ? range.last - range.first + 1
             : fi->has_total     ? fi->total
                                 : UINT64_MAX;
    s->fill = r->a.fill;            /* the request's reference moves to the stream */
    r->a.fill = NULL;
    struct MHD_Response *resp = MHD_create_response_from_callback(
        s->len == UINT64_MAX ? MHD_SIZE_UNKNOWN : s->len, STREAM_BLOCK, stream_read, s, stream_free);
    if (!resp) {
        stream_free(s);
        return respond_text(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    }
    if (rr == HTTP_RANGE_OK)
        add_content_range(resp, &range, fi->total);
    unsigned st = rr == HTTP_RANGE_OK ? MHD_HTTP_PARTIAL_CONTENT : (unsigned)fi->status;
    return queue(r, st, resp, &rp);
}

/* A request whose fill moved on (or that just joined one). */
static enum MHD_Result answer_from_fill(struct http_req *r)
{
    worker_wake_main();
    struct lookup_env env = lookup_env_of(r->e);
    struct lookup_request lq = lookup_req_of(r);
    struct fill_info fi;
    if (!lookup_fill_moved(&env, &lq, &r->a))
        return answer(r);           /* a new decision */
    fill_info(r->a.fill, &fi);
    switch (fi.state) {
    case FILL_CONNECTING:
        return wait_for_fill(r);
    case FILL_REVALIDATED:
        if (lookup_use(&env, fi.fresh, &r->a) == 0)
            return answer_stored(r, "edgecache; fwd=stale; fwd-status=304");
        lookup_answer_free(&r->a);  /* the revalidated copy is gone: decide again */
        lookup_request(&env, &lq, &r->a);
        return answer(r);
    case FILL_FAILED:
        if (lookup_fall_back(&env, &r->a, lq.now))
            return answer_stored(r, stored_status(&r->a));
        return respond_text(r, fi.error_status ? (unsigned)fi.error_status : 502, fi.error);
    default:
        if (fi.status >= 500 && lookup_fall_back(&env, &r->a, lq.now))
            return answer_stored(r, stored_status(&r->a));
        return answer_streaming(r, &fi);
    }
}

/* Renders the request's lookup answer. */
static enum MHD_Result answer(struct http_req *r)
{
    if (r->a.verdict != LOOKUP_STORED)
        worker_wake_main();         /* a fill started or joined, on the main loop */
    switch (r->a.verdict) {
    case LOOKUP_STORED:
        return answer_stored(r, stored_status(&r->a));
    case LOOKUP_FILL:
        return answer_from_fill(r);
    default:
        return respond_text(r, r->a.status ? r->a.status : 502, r->a.reason);
    }
}

static enum MHD_Result serve(struct http_req *r)
{
    struct lookup_env env = lookup_env_of(r->e);
    struct lookup_request lq = lookup_req_of(r);
    lookup_request(&env, &lq, &r->a);
    r->answering = 1;
    return answer(r);
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
    if (strcmp(method, "CONNECT") == 0) {
        snprintf(reason, len, "edgecache is not a tunnel: it serves and caches only what it can "
                 "see, so CONNECT is refused; ask for http:// URLs (forward proxy), or use a "
                 "route or the Delivery Optimization shape for https origins");
        return MHD_HTTP_METHOD_NOT_ALLOWED;
    }
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
    r->relay = relay_start(r->e, r->w, r->conn, method, &r->rt, reason, len);
    return r->relay ? 0 : MHD_HTTP_BAD_GATEWAY;
}

static enum MHD_Result request_locked(struct http_req *r, const char *method,
                                     const char *upload, size_t *upload_size)
{
    char reason[512];
    if (r->answering && r->a.fill)     /* resumed: the fill moved on */
        return answer_from_fill(r);
    if (r->relay)
        return relay_continue(r->relay, upload, upload_size);
    /* The stop's end came (fills closed, the upstream client gone) before
     * this worker was told to close: a new request gets a 503 */
    if (r->e->stopping)
        return respond_text(r, MHD_HTTP_SERVICE_UNAVAILABLE, "edgecache is shutting down");
    if (!r->headers_seen) {
        /* MHD closes the connection after an answer queued from the first
         * call (it has not yet read the request to its end): answer from
         * the second, which keeps connections alive between requests. */
        r->headers_seen = 1;
        if (r->hc) {
            r->hc->phase = CONN_ACTIVE;
            r->hc->since = uv_now(r->w->loop);
        }
        return MHD_YES;
    }
    if (r->hc && r->hc->over_limit && !r->refuse_status) {
        r->e->stats.connections_refused++;
        return respond_text(r, MHD_HTTP_SERVICE_UNAVAILABLE, "edgecache has max_connections "
                            "connections open; try again shortly (config key: max_connections)");
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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **req_cls)
{
    struct worker *w = cls;
    struct http_req *r = *req_cls;
    (void)url, (void)version, (void)conn;
    if (!r || r->magic != REQ_MAGIC)
        return MHD_NO;
    edge_lock(w->e);
    enum MHD_Result ret = request_locked(r, method, upload, upload_size);
    edge_unlock(w->e);
    return ret;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct worker *w = cls;
    struct http_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    edge_lock(w->e);
    r->magic = REQ_MAGIC;
    r->e = w->e;
    r->w = w;
    w->requests++;
    r->conn = conn;
    r->target = strdup(uri);
    r->waiter.wake = req_wake;
    r->fields = (struct hdr_source){conn, fields_get, fields_each};
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->hc = ci ? ci->socket_context : NULL;
    if (r->hc) {
        r->hc->phase = CONN_HEADERS;
        r->hc->since = uv_now(w->loop);
    }
    r->a.fd = r->a.backup_fd = -1;
    r->e->active_requests++;
    r->t0 = uv_hrtime();
    r->cls = STATS_ERROR;
    edge_unlock(w->e);
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct worker *w = cls;
    struct http_req *r = *req_cls;
    (void)conn;
    if (!r)
        return;
    *req_cls = NULL;
    edge_lock(w->e);
    if (r->a.fill || r->relay)
        worker_wake_main();
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && r->cache_bytes_counter)
        *r->cache_bytes_counter += r->cache_bytes;
    if (r->a.fill)
        fill_unwait(r->a.fill, &r->waiter);
    if (r->hc) {
        r->hc->phase = CONN_IDLE;
        r->hc->since = uv_now(w->loop);
    }
    lookup_answer_free(&r->a);
    relay_release(&r->relay);
    free(r->refuse_reason);
    if (r->routed)
        route_target_free(&r->rt);
    free(r->target);
    r->magic = 0;
    struct edge *e = r->e;
    free(r);
    e->active_requests--;
    edge_request_done(e);
    edge_unlock(e);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    struct worker *w = cls;
    struct edge *e = w->e;
    struct http_conn *hc = *socket_ctx;
    edge_lock(e);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        e->stats.connections++;
        w->connections++;
        hc = calloc(1, sizeof *hc);
        if (hc) {                   /* else not watched; MHD's own timeout still holds */
            hc->conn = conn;
            hc->since = uv_now(w->loop);
            hc->over_limit = e->stats.connections > e->cfg->max_connections;
            hc->next = w->conns;
            if (w->conns)
                w->conns->prev = hc;
            w->conns = hc;
            *socket_ctx = hc;
        }
        edge_unlock(e);
        return;
    }
    e->stats.connections--;
    w->connections--;
    if (hc) {
        if (hc->prev)
            hc->prev->next = hc->next;
        else
            w->conns = hc->next;
        if (hc->next)
            hc->next->prev = hc->prev;
        *socket_ctx = NULL;
        free(hc);
    }
    edge_unlock(e);
}

/* Shuts down connections past their time (see the top of this file). */
static void on_conn_scan(uv_timer_t *t)
{
    struct worker *w = t->data;
    struct edge *e = w->e;
    uint64_t now = uv_now(w->loop);
    edge_lock(e);
    for (struct http_conn *hc = w->conns; hc; hc = hc->next) {
        uint64_t limit = hc->phase == CONN_HEADERS ? e->cfg->header_timeout_ms
                         : hc->phase == CONN_IDLE  ? e->cfg->client_timeout_ms
                                                   : 0;
        if (!limit || now - hc->since <= limit)
            continue;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(hc->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci)
            continue;
        log_msg(&e->log, LOG_INFO, "http", "closing a connection whose %s did not arrive "
                "within %llu ms (config key: %s)",
                hc->phase == CONN_HEADERS ? "header fields" : "request",
                (unsigned long long)limit,
                hc->phase == CONN_HEADERS ? "header_timeout" : "client_timeout");
        shutdown(ci->connect_fd, SHUT_RDWR);
        e->stats.slow_clients_dropped++;
        hc->phase = CONN_ACTIVE;    /* once */
    }
    edge_unlock(e);
}

/* One worker's listener and timers, on its loop (not yet running). */
static int worker_listen(struct worker *w, char *err, size_t errlen)
{
    struct edge *e = w->e;
    struct MHD_OptionItem extra[] = {
        {MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, w},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, w},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, w},
        {MHD_OPTION_END, 0, NULL},
    };
    w->daemon = edge_listen(e, &e->cfg->listen,
                            (unsigned)e->cfg->max_connections + HTTP_CONN_HEADROOM,
                            on_request, w, extra, err, errlen);
    if (!w->daemon)
        return -1;
    int rc = mhduv_start(&w->uv, w->loop, w->daemon);
    if (rc) {
        snprintf(err, errlen, "listen: %s", uv_strerror(rc));
        return -1;
    }
    uv_timer_init(w->loop, &w->conn_scan);
    w->conn_scan.data = w;
    w->scan_open = 1;
    uv_timer_start(&w->conn_scan, on_conn_scan, CONN_SCAN_MS, CONN_SCAN_MS);
    return 0;
}

static void worker_quiesce(struct worker *w)
{
    if (!w->daemon)
        return;
    MHD_socket fd = MHD_quiesce_daemon(w->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

/* On w's thread (worker 0: the main loop, the lock held): MHD runs until
 * it has acted on every resume (it aborts when stopped with a connection
 * suspended), then the daemon and the handles go. */
static void worker_close(struct worker *w)
{
    struct edge *e = w->e;
    if (!w->daemon)
        return;
    unsigned left = mhduv_suspended(&w->uv);
    for (unsigned i = 0; i < 16 && left; i++) {
        if (w->has_thread)
            worker_process_mail(w); /* resumes posted meanwhile */
        left = mhduv_drain(&w->uv, 1);
    }
    if (left)
        log_msg(&e->log, LOG_ERROR, "http", "%u connections still suspended at shutdown", left);
    if (w->scan_open) {
        uv_timer_stop(&w->conn_scan);
        uv_close((uv_handle_t *)&w->conn_scan, NULL);
        w->scan_open = 0;
    }
    mhduv_stop(&w->uv, NULL);
    MHD_stop_daemon(w->daemon);
    w->daemon = NULL;
    if (w->has_thread)
        worker_mail_close(w);
}

/* A worker thread's orders (after the resumes posted to it). */
static void on_order(struct worker *w)
{
    int quiesce = 0, stop = 0;
    worker_take_orders(w, &quiesce, &stop);
    if (quiesce)
        worker_quiesce(w);
    if (stop)
        worker_close(w);
}

static void worker_main(void *arg)
{
    struct worker *w = arg;
    worker_set_current(w);
    uv_run(w->loop, UV_RUN_DEFAULT);
}

int http_start(struct edge *e, char *err, size_t errlen)
{
    for (unsigned i = 0; i < e->n_workers; i++) {
        struct worker *w = &e->workers[i];
        w->e = e;
        w->id = i;
        if (i == 0) {
            w->loop = e->loop;
        } else {
            w->loop = &w->own_loop;
            if (uv_loop_init(w->loop) != 0 || worker_mail_open(w, on_order) != 0) {
                snprintf(err, errlen, "cannot set up worker %u's event loop", i);
                return -1;
            }
            w->has_thread = 1;      /* its loop runs on its thread, from http_run */
        }
        if (worker_listen(w, err, errlen) != 0)
            return -1;
    }
    return 0;
}

int http_run(struct edge *e, char *err, size_t errlen)
{
    for (unsigned i = 1; i < e->n_workers; i++) {
        struct worker *w = &e->workers[i];
        int rc = uv_thread_create(&w->thread, worker_main, w);
        if (rc) {
            snprintf(err, errlen, "cannot start worker %u's thread: %s", i, uv_strerror(rc));
            return -1;
        }
        w->started = 1;
    }
    return 0;
}

void http_quiesce(struct edge *e)
{
    for (unsigned i = 0; i < e->n_workers; i++) {
        struct worker *w = &e->workers[i];
        if (w->has_thread)
            worker_order(w, 1, 0);
        else
            worker_quiesce(w);
    }
}

void http_stop(struct edge *e)
{
    if (!e->workers || e->http_stopped)
        return;
    e->http_stopped = 1;
    /* Closing the fills wakes every reader, whatever its fill's state, and
     * stopping the relays wakes theirs (resumes posted to each worker). */
    relay_stop_all(e);
    fills_close(&e->fills);
    for (unsigned i = 0; i < e->n_workers; i++) {
        struct worker *w = &e->workers[i];
        if (!w->has_thread)
            worker_close(w);
        else if (w->started)
            worker_order(w, 0, 1);
        else                        /* never ran: closed here, no thread uses it */
            worker_close(w);
    }
}

void http_join(struct edge *e)
{
    if (!e->workers)
        return;
    int held = e->threaded;
    if (held)
        pthread_mutex_unlock(&e->lock);
    for (unsigned i = 1; i < e->n_workers; i++) {
        struct worker *w = &e->workers[i];
        if (w->started) {
            uv_thread_join(&w->thread);
            w->started = 0;
        }
    }
    if (held)
        pthread_mutex_lock(&e->lock);
    for (unsigned i = 1; i < e->n_workers; i++) {
        struct worker *w = &e->workers[i];
        if (w->loop == &w->own_loop) {
            uv_run(w->loop, UV_RUN_DEFAULT);    /* close callbacks of a loop that never ran */
            uv_loop_close(w->loop);
            pthread_mutex_destroy(&w->mail_mu);
            w->loop = NULL;
        }
    }
}
