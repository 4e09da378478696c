/*
 * fill_http — a fill's exchange with its upstream (see fill.h for the
 * model): what is sent (the client's end-to-end fields, Via, validators),
 * what the answer's fields say (redirects, freshness, digests, Vary), the
 * body, resumes, and how the transfer ends. In the order of a fill's life:
 * setup -> request fields -> headers -> body -> end.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cache/catalog.h"
#include "cache/evict.h"
#include "cache/fill_int.h"
#include "cache/peers.h"
#include "cache/http_range.h"
#include "cache/route.h"
#include "cache/stats.h"
#include "version.h"

#define UPSTREAM_BUFFER (256 * 1024)

static size_t on_header(char *buf, size_t size, size_t n, void *arg);
static size_t on_body(char *buf, size_t size, size_t n, void *arg);
static void on_done(struct upstream_xfer *x, CURLcode result);
static void on_retry(uv_timer_t *t);
static void fill_break(struct fill *fl, const char *why);
static int refuse(struct fill *fl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Request fields never forwarded: hop-by-hop ones (and those Connection
 * names, see hdrs_strip_hop_by_hop), those curl writes from the URL, the
 * fill's own (it asks for whole objects, with its own validators) and Via,
 * which the fill extends. */
static const char *const not_forwarded[] = {
    "host", "range", "if-range", "if-none-match", "if-modified-since", "if-match",
    "if-unmodified-since", "via", "content-length", "expect", "cache-status",
    PEER_FIELD,
};

/* ---- setup ---------------------------------------------------------------- */

struct copy_ctx {
    struct fill *fl;
    int failed;
};

static int copy_field(void *arg, const char *name, const char *value)
{
    struct copy_ctx *c = arg;
    for (size_t i = 0; i < sizeof not_forwarded / sizeof not_forwarded[0]; i++)
        if (strcasecmp(name, not_forwarded[i]) == 0)
            return 0;
    if (hdrs_add_str(&c->fl->req, name, value ? value : "") != 0)
        c->failed = 1;
    return 0;
}

/* The key's owner among the live peers, or NULL when it is this node (or
 * no peer is configured, or a peer forwarded the request: the loop guard). */
static const struct peer *owner_peer(struct fill *fl)
{
    const struct fills_env *env = fill__env(fl);
    const struct peer *order[64];
    if (!env->peers || fl->peer_forwarded || fl->skip_peers)
        return NULL;
    size_t n = peers_rank(env->peers, fl->key, order, 64);
    for (size_t i = 0; i < n; i++) {
        if (order[i]->self)
            return NULL;
        uint64_t id = peers_score(order[i]->id, "");
        int failed = 0;
        for (unsigned k = 0; k < fl->n_peers_failed && !failed; k++)
            failed = fl->peers_failed[k] == id;
        if (!failed && fill__health_usable(fl->owner, order[i]->base)) {
            fl->peer_asked = id;
            return order[i];
        }
    }
    return NULL;
}

/* Where to ask: the key's owner in the layer (peers.h), the parent in DO
 * shape, or the origin. A redirect's target is never asked of a peer. */
static int aim(struct fill *fl, const char *url)
{
    const struct cfg *cfg = fill__env(fl)->cfg;
    const struct peer *peer = strcmp(url, fl->origin_url) == 0 ? owner_peer(fl) : NULL;
    free(fl->hop_url);
    free(fl->fetch_url);
    fl->hop_url = strdup(url);
    fl->from_peer = peer != NULL;
    fl->from_parent = !peer && cfg->parent && cfg->parent[0];
    fl->fetch_url = peer           ? route_do_url(peer->base, url)
                    : fl->from_parent ? route_do_url(cfg->parent, url)
                                      : strdup(url);
    if (!fl->hop_url || !fl->fetch_url)
        return -1;
    fl->health = fill__health_of(fl->owner, fl->fetch_url);
    return 0;
}

static int setup_easy(struct fill *fl)
{
    const struct cfg *cfg = fill__env(fl)->cfg;
    CURL *e = upstream_easy(cfg->connect_timeout_ms, fl->curl_error);
    if (!e)
        return -1;
    fl->xfer.easy = e;
    fl->xfer.done = on_done;
    curl_easy_setopt(e, CURLOPT_URL, fl->fetch_url);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)UPSTREAM_BUFFER);
    curl_easy_setopt(e, CURLOPT_FILETIME, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, fl);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, fl);
    return 0;
}

static struct curl_slist *request_fields(const struct fill *fl, const char *if_range);

int fill__setup(struct fill *fl, const struct hdr_source *req, char *reason, size_t reasonlen)
{
    const struct cfg *cfg = fill__env(fl)->cfg;
    struct copy_ctx c = {fl, 0};
    if (req && req->each)
        req->each(req->ctx, copy_field, &c);
    hdrs_strip_hop_by_hop(&fl->req);
    fl->authorized = hdrs_get(&fl->req, "Authorization") != NULL;
    fl->peer_forwarded = req && req->get && req->get(req->ctx, PEER_FIELD) != NULL;
    const char *via_in = req && req->get ? req->get(req->ctx, "Via") : NULL;
    if (asprintf(&fl->via, "%s%s1.1 %s (edgecache/%s)", via_in ? via_in : "",
                 via_in ? ", " : "", cfg->node_id, EDGECACHE_VERSION) < 0)
        fl->via = NULL;
    if (c.failed || !fl->via || aim(fl, fl->origin_url) != 0
        || !(fl->redirects[0] = strdup(fl->origin_url))) {
        snprintf(reason, reasonlen, "cannot make the upstream request for %.300s (out of memory)",
                 fl->origin_url);
        return -1;
    }
    fl->n_redirects = 1;
    if (setup_easy(fl) != 0 || !(fl->req_slist = request_fields(fl, NULL))) {
        snprintf(reason, reasonlen, "cannot set up the upstream transfer");
        return -1;
    }
    curl_easy_setopt(fl->xfer.easy, CURLOPT_HTTPHEADER, fl->req_slist);
    return 0;
}

void fill__release_http(struct fill *fl)
{
    curl_slist_free_all(fl->req_slist);
    fl->req_slist = NULL;
    hdrs_free(&fl->req);
    hdrs_free(&fl->hop);
    hdrs_free(&fl->resp);
    for (unsigned i = 0; i < fl->n_redirects; i++)
        free(fl->redirects[i]);
    fl->n_redirects = 0;
    free(fl->redirect_to);
    free(fl->hop_url);
    free(fl->fetch_url);
    free(fl->via);
    free(fl->validator);
    free(fl->variant);
    free(fl->upstream_cs);
    fl->redirect_to = fl->hop_url = fl->fetch_url = fl->via = fl->validator = NULL;
    fl->variant = fl->upstream_cs = NULL;
}

/* ---- the request's fields ---------------------------------------------------- */

static struct curl_slist *add_line(struct curl_slist *l, const char *name, const char *value)
{
    char line[8200];
    if (!value[0])
        snprintf(line, sizeof line, "%s;", name);   /* curl's way to send an empty field */
    else
        snprintf(line, sizeof line, "%s: %s", name, value);
    struct curl_slist *n = curl_slist_append(l, line);
    if (!n)
        curl_slist_free_all(l);
    return n;
}

/* The client's forwarded fields (credentials dropped once a redirect left
 * the first origin, as curl does), Via, and the fill's own: If-Range on a
 * resume, the stored validators on a revalidation. curl's default Accept
 * is suppressed when the client sent none. */
static struct curl_slist *request_fields(const struct fill *fl, const char *if_range)
{
    char date[64];
    struct curl_slist *l = NULL;
    for (unsigned i = 0; i < fl->req.n; i++) {
        const char *name = hdrs_name(&fl->req, i);
        if (fl->cross_origin && (strcasecmp(name, "Authorization") == 0
                                 || strcasecmp(name, "Cookie") == 0))
            continue;
        if (!(l = add_line(l, name, hdrs_value(&fl->req, i))))
            return NULL;
    }
    if (!hdrs_get(&fl->req, "Accept") && !(l = curl_slist_append(l, "Accept:")))
        return NULL;
    if (!(l = add_line(l, "Via", fl->via)))
        return NULL;
    if (fl->from_peer && !(l = add_line(l, PEER_FIELD, "1")))
        return NULL;
    if (if_range)
        return add_line(l, "If-Range", if_range);
    if (fl->revalidating && fl->received == 0 && fl->stale) {
        if (fl->stale->etag && !(l = add_line(l, "If-None-Match", fl->stale->etag)))
            return NULL;
        if (fl->stale->last_modified > 0) {
            http_date_format((time_t)fl->stale->last_modified, date, sizeof date);
            l = add_line(l, "If-Modified-Since", date);
        }
    }
    return l;
}

/* ---- stall watch -------------------------------------------------------------- */

void fill__stall_rearm(struct fill *fl)
{
    uv_timer_start(&fl->timer, fill__on_stall, fill__env(fl)->cfg->stall_timeout_ms, 0);
}

void fill__on_stall(uv_timer_t *t)
{
    struct fill *fl = t->data;
    char why[160];
    snprintf(why, sizeof why, "sent nothing for %llu ms (config key: stall_timeout)",
             (unsigned long long)fill__env(fl)->cfg->stall_timeout_ms);
    upstream_cancel(fill__env(fl)->upstream, &fl->xfer);
    if (fl->state == FILL_STREAMING) {
        fill_break(fl, why);
        return;
    }
    /* no answer at all: as unreachable as a refused connection */
    fill__health_failed(fl, why);
    fill__fail(fl, 504, "upstream %.300s %s", fl->fetch_url, why);
}

/* ---- what the answer's fields say ----------------------------------------------- */

static int refuse(struct fill *fl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fl->error, sizeof fl->error, fmt, ap);
    va_end(ap);
    fl->fatal = 1;
    return -1;
}

int fill__expects_digest(const struct fill *fl)
{
    return fl->exp_sha_set || fl->hdr_sha_set || fl->md5_expected;
}

/* The digests the answer declares. */
static void adopt_upstream_digests(struct fill *fl)
{
    if (digest_from_fields(hdrs_get(&fl->hop, "Repr-Digest"), hdrs_get(&fl->hop, "Digest"),
                           fl->hdr_sha) == 0)
        fl->hdr_sha_set = 1;
    const char *md5 = hdrs_get(&fl->hop, "x-ms-blob-content-md5");
    if (!md5)
        md5 = hdrs_get(&fl->hop, "Content-MD5");
    if (digest_md5_from_field(md5, fl->hdr_md5) == 0 && digest_init_md5(&fl->md5) == 0)
        fl->md5_expected = 1;
}

/* If-Range needs a strong validator: a strong ETag, else Last-Modified. */
static void adopt_validator(struct fill *fl)
{
    const char *etag = hdrs_get(&fl->hop, "ETag");
    const char *lm = hdrs_get(&fl->hop, "Last-Modified");
    free(fl->validator);
    fl->validator = NULL;
    if (etag && etag[0] == '"')
        fl->validator = strdup(etag);
    else if (lm)
        fl->validator = strdup(lm);
}

static int64_t field_date(const struct hdrs *h, const char *name)
{
    time_t t;
    const char *v = hdrs_get(h, name);
    return v && http_date_parse(v, &t) == 0 ? (int64_t)t : 0;
}

/* What RFC 9111 and the path rules say of an answer with these fields. */
static void evaluate(struct fill *fl, long status, const struct hdrs *h, struct fresh_result *out)
{
    const struct cfg *cfg = fill__env(fl)->cfg;
    char cc[1024], expires[128], date[128], age[64];
    struct fresh_input in = {
        .status = status,
        .cache_control = hdrs_get_all(h, "Cache-Control", cc, sizeof cc) ? cc : NULL,
        .expires = hdrs_get_all(h, "Expires", expires, sizeof expires) ? expires : NULL,
        .date = hdrs_get_all(h, "Date", date, sizeof date) ? date : NULL,
        .age = hdrs_get_all(h, "Age", age, sizeof age) ? age : NULL,
        .last_modified = field_date(h, "Last-Modified"),
        .request_time = fl->request_time,
        .response_time = fl->response_time,
        .heuristic_max_age = (int64_t)(cfg->heuristic_max_age_ms / 1000),
        .request_authorized = fl->authorized,
        .immutable = fl->exp_sha_set || route_immutable(cfg, fl->origin_url),
    };
    fresh_policy_for(cfg, fl->origin_url, &in.policy);
    fresh_evaluate(&in, out);
}

/* The answer's end-to-end fields, without those edgecache writes itself. */
static int take_fields(struct fill *fl)
{
    static const char *const own[] = {"Age", "Content-Length", "Accept-Ranges", "Content-Range",
                                      "Repr-Digest", "Cache-Status"};
    char cs[1024];
    hdrs_free(&fl->resp);
    if (hdrs_copy(&fl->resp, &fl->hop) != 0)
        return -1;
    hdrs_strip_hop_by_hop(&fl->resp);
    free(fl->upstream_cs);
    fl->upstream_cs = hdrs_get_all(&fl->resp, "Cache-Status", cs, sizeof cs) ? strdup(cs) : NULL;
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (fl->hop_status != 206 || strcmp(own[i], "Content-Range") != 0)
            hdrs_remove(&fl->resp, own[i]);     /* a 206 passed on keeps its range */
    /* a response without Date gets the time it came (RFC 9110 §6.6.1) */
    if (!hdrs_get(&fl->resp, "Date")) {
        char date[64];
        http_date_format((time_t)fl->response_time, date, sizeof date);
        if (hdrs_add_str(&fl->resp, "Date", date) != 0)
            return -1;
    }
    return 0;
}

/* The final answer: what the fill is. */
static void first_answer(struct fill *fl, curl_off_t len)
{
    const struct fills_env *env = fill__env(fl);
    struct hdr_source req;
    fl->answered = 1;
    fl->status = fl->hop_status;
    if (take_fields(fl) != 0) {
        refuse(fl, "out of memory reading the answer of %.300s", fl->origin_url);
        return;
    }
    fl->has_total = len >= 0;
    fl->total = len >= 0 ? (uint64_t)len : 0;
    fl->last_modified = field_date(&fl->resp, "Last-Modified");
    if (fl->status != 200)
        fl->exp_sha_set = 0;        /* an expectation is of the payload, not an error page */
    evaluate(fl, fl->status, &fl->hop, &fl->fresh);
    if (hdrs_vary_names(&fl->resp, fl->vary, sizeof fl->vary) != 0)
        snprintf(fl->vary, sizeof fl->vary, "*");   /* too many names to key on */
    hdrs_source(&fl->req, &req);
    fl->variant = hdrs_variant_key(&req, fl->vary);
    fl->storable = fl->fresh.storable && fl->variant && strcmp(fl->vary, "*") != 0;
    /* A 200 that is never fresh is still kept: revalidated, or served stale
     * when the upstream fails. An error that is never fresh and has no
     * validator could only ever be fetched again: not stored. */
    if (fl->storable && fl->status != 200 && fl->fresh.fresh_until <= fl->response_time
        && !hdrs_get(&fl->resp, "ETag") && !hdrs_get(&fl->resp, "Last-Modified"))
        fl->storable = 0;
    /* the key's owner keeps the layer's copy; this node passes it on */
    if (fl->from_peer && !fl->keep)
        fl->storable = 0;
    adopt_upstream_digests(fl);
    if (fl->status == 200)
        adopt_validator(fl);
    if (env->cfg->require_verified && !fill__expects_digest(fl)) {
        if (fl->status == 200) {
            env->stats->unverified_refused++;
            refuse(fl, "refused %.300s: no expected digest (no registered expectation, no "
                   "digest header from the upstream) and require_verified is on (config key: "
                   "require_verified)", fl->origin_url);
            return;
        }
        fl->storable = 0;           /* an error page is passed on, never stored unverified */
    }
    if (fl->exp_size >= 0 && fl->has_total && (uint64_t)fl->exp_size != fl->total) {
        env->stats->verify_fail_expectation++;
        refuse(fl, "verification failed for %.300s: expected size %lld (expectation), upstream "
               "Content-Length %llu", fl->origin_url, (long long)fl->exp_size,
               (unsigned long long)fl->total);
        return;
    }
    if (!fl->storable)
        log_msg(env->log, LOG_INFO, "fill", "%.300s answered %ld: passed on, not stored (%s)",
                fl->origin_url, fl->status,
                fl->fresh.why_not ? fl->fresh.why_not : strcmp(fl->vary, "*") == 0
                ? "Vary: *" : fl->status != 200 ? "never fresh, and no validator"
                : "require_verified and no digest");
    if (fl->fresh.personal)
        fill_detach(fl);            /* nobody else may be handed this answer */
    fill__set_state(fl, FILL_STREAMING);
    fill__wake_all(fl);
}

/* "bytes A-B/T": A must be what we have and T what we expect. */
static int resume_range_ok(const struct fill *fl)
{
    unsigned long long a, b, t;
    const char *cr = hdrs_get(&fl->hop, "Content-Range");
    if (!cr || sscanf(cr, "bytes %llu-%llu/%llu", &a, &b, &t) != 3)
        return 0;
    return a == fl->received && (!fl->has_total || (t == fl->total && b + 1 == t));
}

/* An answer to a resume: 206 continues, 200 restarts from byte 0. */
static void resume_answer(struct fill *fl, curl_off_t len)
{
    const struct fills_env *env = fill__env(fl);
    if (fl->hop_status == 206 && fl->asked_range && resume_range_ok(fl)) {
        log_msg(env->log, LOG_INFO, "fill", "resumed %.300s at byte %llu", fl->origin_url,
                (unsigned long long)fl->received);
        return;
    }
    /* A 200 with another strong ETag than the one we resumed with is
     * another object: no need to read it to know. */
    const char *etag = hdrs_get(&fl->hop, "ETag");
    int other_etag = fl->validator && fl->validator[0] == '"' && etag
                     && strcmp(etag, fl->validator) != 0;
    if (fl->hop_status == 200 && !other_etag
        && (!fl->has_total || (len >= 0 && (uint64_t)len == fl->total))) {
        env->stats->fill_restarts++;
        fl->restarting = 1;
        fl->rewrite_pos = 0;
        digest_init(&fl->sha);
        if (fl->md5_expected)
            digest_init_md5(&fl->md5);
        log_msg(env->log, LOG_WARN, "fill",
                "upstream %.300s answered the resume with the whole body: re-reading it and "
                "comparing the %llu bytes already received", fl->origin_url,
                (unsigned long long)fl->received);
        return;
    }
    refuse(fl, "upstream %.300s answered %ld%s to a resume at byte %llu: the object changed",
           fl->origin_url, fl->hop_status, fl->hop_status == 206 ? " with another range" : "",
           (unsigned long long)fl->received);
}

static int is_redirect(long status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/* A redirect: where it leads, checked against the allow-list and the
 * limit. Sets redirect_to (the transfer then ends and starts again there),
 * or refuses. */
static void plan_redirect(struct fill *fl, const char *location)
{
    const struct cfg *cfg = fill__env(fl)->cfg;
    char *next = NULL, *scheme = NULL, *host = NULL, *port = NULL;
    CURLU *u = curl_url();
    if (!u || curl_url_set(u, CURLUPART_URL, fl->hop_url, 0) != CURLUE_OK
        || curl_url_set(u, CURLUPART_URL, location, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK
        || curl_url_get(u, CURLUPART_URL, &next, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        refuse(fl, "upstream %.300s redirected to '%.300s', which is not a URL", fl->hop_url,
               location);
        goto out;
    }
    for (char *c = host; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    if (!route_allow_match(cfg, scheme, host, (unsigned)strtoul(port, NULL, 10))) {
        refuse(fl, "upstream %.300s redirected to %.300s: origin %s://%s:%s is not on the "
               "allow-list (config key: allow)", fl->hop_url, next, scheme, host, port);
        goto out;
    }
    if (fl->n_redirects > cfg->max_redirects || fl->n_redirects > FILL_MAX_REDIRECTS) {
        char chain[512];
        size_t pos = 0;
        for (unsigned i = 0; i < fl->n_redirects && pos < sizeof chain; i++)
            pos += (size_t)snprintf(chain + pos, sizeof chain - pos, "%s%.120s",
                                    i ? " -> " : "", fl->redirects[i]);
        refuse(fl, "upstream redirected %.300s more than %llu times (config key: "
               "max_redirects): %s -> %.200s", fl->origin_url,
               (unsigned long long)cfg->max_redirects, chain, next);
        goto out;
    }
    fl->redirect_to = strdup(next);
    if (!fl->redirect_to)
        refuse(fl, "out of memory");
out:
    curl_free(next);
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
}

/* The blank line that ends a response's header block. */
static void headers_done(struct fill *fl)
{
    const struct fills_env *env = fill__env(fl);
    CURL *e = fl->xfer.easy;
    curl_off_t len = -1;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &fl->hop_status);
    if (fl->hop_status >= 100 && fl->hop_status < 200)
        return;                     /* an interim response; the real one follows */
    fill__health_ok(fl);
    curl_easy_getinfo(e, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
    if (fl->state == FILL_STREAMING) {
        resume_answer(fl, len);
        return;
    }
    fl->response_time = fill__now();
    if (fl->hop_status == 304 && fl->revalidating) {
        fl->not_modified = 1;       /* the stored response is still good */
        return;
    }
    const char *location = hdrs_get(&fl->hop, "Location");
    if (is_redirect(fl->hop_status) && location && env->cfg->max_redirects > 0) {
        plan_redirect(fl, location);
        return;
    }
    if (((fl->from_parent && env->cfg->parent_fallback_to_origin) || fl->from_peer)
        && fl->hop_status >= 500 && fl->hop_status != 508) {
        fl->fallback_pending = 1;
        return;
    }
    first_answer(fl, len);
}

static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
    struct fill *fl = arg;
    size_t len = size * n;
    fill__stall_rearm(fl);
    if (len >= 5 && strncasecmp(buf, "HTTP/", 5) == 0) {
        hdrs_clear(&fl->hop);       /* a new response (after 1xx or a redirect) */
    } else if ((len == 2 && buf[0] == '\r') || (len == 1 && buf[0] == '\n')) {
        headers_done(fl);
        if (fl->fatal || fl->redirect_to || fl->fallback_pending)
            return 0;               /* stop the transfer; on_done goes on */
    } else if (hdrs_add_line(&fl->hop, buf, len) != 0) {
        refuse(fl, "upstream %.300s sent more than %d bytes of header fields", fl->fetch_url,
               HDRS_MAX_BYTES);
        return 0;
    }
    return len;
}

/* ---- the body ---------------------------------------------------------------- */

static void hash(struct fill *fl, const char *buf, size_t len)
{
    digest_update(&fl->sha, buf, len);
    if (fl->md5_expected)
        digest_update(&fl->md5, buf, len);
}

/* After a 200 to a resume: the bytes up to `received` must be the ones
 * readers may already have had. */
static int compare_prefix(struct fill *fl, const char *buf, size_t len)
{
    char old[16384];
    size_t done = 0;
    while (done < len) {
        size_t n = len - done < sizeof old ? len - done : sizeof old;
        if (fill_pread(fl, old, n, fl->rewrite_pos) < 0)
            return refuse(fl, "cannot read back %.300s: %s", fl->tmp_path, strerror(errno));
        if (memcmp(old, buf + done, n) != 0)
            return refuse(fl, "upstream %.300s sent other bytes at offset %llu after a restart: "
                          "the object changed during the fill", fl->origin_url,
                          (unsigned long long)fl->rewrite_pos);
        hash(fl, buf + done, n);
        fl->rewrite_pos += n;
        done += n;
    }
    return 0;
}

static int append(struct fill *fl, const char *buf, size_t len)
{
    if (fl->has_total && fl->received + len > fl->total) {
        fill__env(fl)->stats->verify_fail_content_length++;
        return refuse(fl, "verification failed for %.300s: upstream sent more than its "
                      "Content-Length %llu", fl->origin_url, (unsigned long long)fl->total);
    }
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(fl->fd, buf + done, len - done, (off_t)(fl->received + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == ENOSPC || errno == EDQUOT)) {
            /* the fill fails (its readers are cut); room is made for the next */
            evict_pressure(fill__env(fl)->evictor, fl->has_total ? fl->total : fl->received + len);
            return refuse(fl, "cannot write %.300s: the disk is full (%s); evicting",
                          fl->tmp_path, strerror(errno));
        }
        if (w <= 0)
            return refuse(fl, "cannot write %.300s: %s", fl->tmp_path, strerror(errno));
        done += (size_t)w;
    }
    hash(fl, buf, len);
    fl->received += len;
    return 0;
}

static size_t on_body(char *buf, size_t size, size_t n, void *arg)
{
    struct fill *fl = arg;
    size_t len = size * n, skip = 0;
    fill__stall_rearm(fl);
    fill__env(fl)->stats->upstream_bytes += len;
    if (fl->state != FILL_STREAMING || fl->fatal)
        return fl->not_modified ? len : 0;      /* a 304's body (there should be none) */
    if (fl->restarting) {
        skip = fl->received - fl->rewrite_pos;
        if (skip > len)
            skip = len;
        if (compare_prefix(fl, buf, skip) != 0)
            return 0;
        if (fl->rewrite_pos == fl->received)
            fl->restarting = 0;
    }
    if (skip < len && append(fl, buf + skip, len - skip) != 0)
        return 0;
    fill__wake_soon(fl);
    return len;
}

/* ---- the end of the transfer ------------------------------------------------ */

/* A 304: the stored response stands, with its fields updated from the 304
 * (RFC 9111 §4.3.4) and its freshness evaluated again. The catalog takes
 * the new snapshot at once (the index is written behind), so the fill can
 * end now: its readers serve that snapshot, later requests find it. */
static void end_revalidated(struct fill *fl)
{
    const struct fills_env *env = fill__env(fl);
    struct hdrs merged, newer;
    struct fresh_result fr;
    if (hdrs_copy(&merged, &fl->stale->hdrs) != 0 || hdrs_copy(&newer, &fl->hop) != 0) {
        hdrs_free(&merged);
        fill__fail(fl, 502, "out of memory revalidating %.300s", fl->origin_url);
        return;
    }
    hdrs_strip_hop_by_hop(&newer);
    hdrs_remove(&newer, "Age");
    hdrs_update(&merged, &newer);
    evaluate(fl, fl->stale->status, &merged, &fr);
    /* the 304's own Age and Date make the age; the stored block keeps the rest */
    struct fresh_result age;
    evaluate(fl, fl->stale->status, &fl->hop, &age);
    int64_t life = fr.lifetime;
    int64_t until = life == FRESH_FOREVER ? FRESH_FOREVER
                    : life > age.initial_age ? fl->response_time + life - age.initial_age
                                             : fl->response_time;
    unsigned flags = (fr.no_stale ? CAT_NO_STALE : 0)
                     | (fr.always_revalidate ? CAT_ALWAYS_REVALIDATE : 0);
    hdrs_free(&newer);
    fl->fresh_resp = env->catalog
        ? catalog_refresh(env->catalog, fl->stale, &merged, fl->response_time, age.initial_age,
                          until, fr.stale_if_error, flags)
        : NULL;
    hdrs_free(&merged);
    if (!fl->fresh_resp) {
        cat_resp_ref(fl->stale);    /* the old one still serves its readers */
        fl->fresh_resp = fl->stale;
    }
    env->stats->revalidated++;
    log_msg(env->log, LOG_DEBUG, "fill", "%.300s not modified: fresh again", fl->origin_url);
    fill__set_state(fl, FILL_REVALIDATED);
    fill__end(fl);
}

static void fail_own(struct fill *fl)
{
    char own[sizeof fl->error];
    memcpy(own, fl->error, sizeof own);
    fill__fail(fl, 502, "%s", own);
}

/* Begins the exchange again at url (a redirect; the origin after the
 * parent failed): a fresh answer, same fill. */
static int restart_at(struct fill *fl, const char *url)
{
    const struct fills_env *env = fill__env(fl);
    if (aim(fl, url) != 0)
        return -1;
    hdrs_clear(&fl->hop);
    fl->hop_status = 0;
    fl->curl_error[0] = '\0';
    curl_slist_free_all(fl->req_slist);
    if (!(fl->req_slist = request_fields(fl, NULL)))
        return -1;
    curl_easy_setopt(fl->xfer.easy, CURLOPT_HTTPHEADER, fl->req_slist);
    curl_easy_setopt(fl->xfer.easy, CURLOPT_URL, fl->fetch_url);
    env->stats->upstream_requests++;
    fl->request_time = fill__now();
    if (upstream_start(env->upstream, &fl->xfer) != 0)
        return -1;
    fill__stall_rearm(fl);
    return 0;
}

static int origin_of(const char *url, char *out, size_t outlen)
{
    const char *p = strstr(url, "://");
    if (!p)
        return -1;
    size_t n = (size_t)(p + 3 - url) + strcspn(p + 3, "/?#");
    snprintf(out, outlen, "%.*s", (int)n, url);
    return 0;
}

static void follow_redirect(struct fill *fl)
{
    char *next = fl->redirect_to;
    char a[300], b[300];
    fl->redirect_to = NULL;
    if (origin_of(fl->redirects[0], a, sizeof a) != 0 || origin_of(next, b, sizeof b) != 0
        || strcasecmp(a, b) != 0)
        fl->cross_origin = 1;
    fl->redirects[fl->n_redirects++] = next;
    log_msg(fill__env(fl)->log, LOG_INFO, "fill", "%.300s: upstream %.300s answered %ld: "
            "following it to %.300s", fl->origin_url, fl->hop_url, fl->hop_status, next);
    if (restart_at(fl, next) != 0)
        fill__fail(fl, 502, "cannot follow the redirect of %.300s to %.300s", fl->origin_url,
                   next);
}

/* The peer asked failed (it is marked down when it did not connect): the
 * key goes to the next-ranked live peer, which may be this node (then it
 * fills from the parent or the origin). Every node ranks alike, so they
 * all pick the same one. */
static int fall_back_from_peer(struct fill *fl, const char *why)
{
    const struct fills_env *env = fill__env(fl);
    fl->fallback_pending = 0;
    log_msg(env->log, LOG_WARN, "fill", "peer %.300s failed for %.300s (%s): asking the "
            "next-ranked peer", fl->fetch_url, fl->origin_url, why);
    if (fl->n_peers_failed < sizeof fl->peers_failed / sizeof fl->peers_failed[0])
        fl->peers_failed[fl->n_peers_failed++] = fl->peer_asked;
    else
        fl->skip_peers = 1;
    char *url = strdup(fl->hop_url);
    int rc = url ? restart_at(fl, url) : -1;
    free(url);
    return rc == 0;
}

/* parent_fallback_to_origin: ask the origin instead, once. */
static int fall_back_to_origin(struct fill *fl, const char *why)
{
    const struct fills_env *env = fill__env(fl);
    if (fl->from_peer)
        return fall_back_from_peer(fl, why);
    fl->fallback_pending = 0;
    if (!fl->from_parent || !env->cfg->parent_fallback_to_origin)
        return 0;
    log_msg(env->log, LOG_WARN, "fill", "parent failed for %.300s (%s): asking the origin",
            fl->origin_url, why);
    env->stats->parent_fallbacks++;
    char *url = strdup(fl->hop_url);
    int rc = -1;
    if (url) {
        /* not aim(): it would send it to the parent again */
        free(fl->fetch_url);
        fl->fetch_url = NULL;
        free(fl->hop_url);
        fl->hop_url = url;
        fl->fetch_url = strdup(url);
        fl->from_parent = 0;
        fl->health = fl->fetch_url ? fill__health_of(fl->owner, fl->fetch_url) : NULL;
        if (fl->fetch_url) {
            hdrs_clear(&fl->hop);
            fl->hop_status = 0;
            fl->curl_error[0] = '\0';
            curl_easy_setopt(fl->xfer.easy, CURLOPT_URL, fl->fetch_url);
            env->stats->upstream_requests++;
            fl->request_time = fill__now();
            rc = upstream_start(env->upstream, &fl->xfer);
            if (rc == 0)
                fill__stall_rearm(fl);
        }
    }
    return rc == 0;
}

/* Only failing to resolve, to connect, or to connect in time says that an
 * upstream is down; anything after the connection is this URL's failure. */
static int says_down(CURLcode result)
{
    return result == CURLE_COULDNT_RESOLVE_HOST || result == CURLE_COULDNT_RESOLVE_PROXY
           || result == CURLE_COULDNT_CONNECT || result == CURLE_OPERATION_TIMEDOUT;
}

static void fail_curl(struct fill *fl, CURLcode result)
{
    const char *what = fl->curl_error[0] ? fl->curl_error : curl_easy_strerror(result);
    long os_errno = 0;
    curl_easy_getinfo(fl->xfer.easy, CURLINFO_OS_ERRNO, &os_errno);
    if (os_errno == EMFILE || os_errno == ENFILE) {     /* our own shortage, not the upstream's */
        fill__env(fl)->stats->resource_errors++;
        fill__fail(fl, 503, "edgecache has no file descriptor left to reach %.300s "
                   "(ulimit -n); try again shortly", fl->fetch_url);
        return;
    }
    if (says_down(result))
        fill__health_failed(fl, what);
    if (fall_back_to_origin(fl, what))
        return;
    if (result == CURLE_OPERATION_TIMEDOUT)
        fill__fail(fl, 504, "upstream %.300s timed out: %s (config key: connect_timeout)",
                   fl->fetch_url, what);
    else
        fill__fail(fl, 502, "upstream %.300s unreachable: %s", fl->fetch_url, what);
}

/* The upstream broke off mid-body: resume after a backoff, or give up. Only
 * a 200 is resumed; another answer's body is short, and fails. */
static void fill_break(struct fill *fl, const char *why)
{
    const struct fills_env *env = fill__env(fl);
    if (fl->attempts >= env->cfg->resume_attempts || fl->status != 200) {
        if (fl->has_total && fl->received < fl->total)
            env->stats->verify_fail_content_length++;
        char total[32] = "?";
        if (fl->has_total)
            snprintf(total, sizeof total, "%llu", (unsigned long long)fl->total);
        fill__fail(fl, 502, "upstream %.300s broke off %u time%s (resume_attempts is %llu), "
                   "%llu of %s bytes received; last: %s", fl->origin_url, fl->attempts + 1,
                   fl->attempts ? "s" : "", (unsigned long long)env->cfg->resume_attempts,
                   (unsigned long long)fl->received, total, why);
        return;
    }
    fl->attempts++;
    uint64_t delay = 100u << (fl->attempts - 1 < 5 ? fl->attempts - 1 : 5);
    log_msg(env->log, LOG_WARN, "fill", "upstream %.300s broke off at byte %llu (%s): resuming "
            "in %llu ms, attempt %u of %llu", fl->origin_url, (unsigned long long)fl->received,
            why, (unsigned long long)delay, fl->attempts,
            (unsigned long long)env->cfg->resume_attempts);
    uv_timer_start(&fl->timer, on_retry, delay, 0);
}

/* Ask for what is missing: Range + If-Range when there is a validator;
 * without one, the whole body again (compared as it comes: restart). */
static void on_retry(uv_timer_t *t)
{
    struct fill *fl = t->data;
    const struct fills_env *env = fill__env(fl);
    char range[48];
    curl_slist_free_all(fl->req_slist);
    fl->asked_range = fl->received > 0 && fl->validator;
    if (fl->asked_range)
        snprintf(range, sizeof range, "%llu-", (unsigned long long)fl->received);
    fl->req_slist = request_fields(fl, fl->asked_range ? fl->validator : NULL);
    curl_easy_setopt(fl->xfer.easy, CURLOPT_HTTPHEADER, fl->req_slist);
    curl_easy_setopt(fl->xfer.easy, CURLOPT_RANGE, fl->asked_range ? range : NULL);
    fl->curl_error[0] = '\0';
    fl->hop_status = 0;
    env->stats->fill_resumes++;
    env->stats->upstream_requests++;
    if (!fl->req_slist || upstream_start(env->upstream, &fl->xfer) != 0) {
        fill__fail(fl, 502, "cannot restart the upstream transfer for %.300s", fl->origin_url);
        return;
    }
    fill__stall_rearm(fl);
}

/* Every check the fill knows of, in order; counts and logs the first that
 * fails. Returns 0 when the bytes are what they must be. */
static int verify(struct fill *fl, const unsigned char sha[DIGEST_SHA256_LEN])
{
    struct stats *st = fill__env(fl)->stats;
    char want[DIGEST_SHA256_HEX], got[DIGEST_SHA256_HEX];
    digest_hex(sha, DIGEST_SHA256_LEN, got);
    if (fl->exp_sha_set && fl->exp_size >= 0 && (uint64_t)fl->exp_size != fl->received) {
        st->verify_fail_expectation++;
        return refuse(fl, "verification failed for %.300s: expected %lld bytes (expectation), "
                      "got %llu", fl->origin_url, (long long)fl->exp_size,
                      (unsigned long long)fl->received);
    }
    if (fl->exp_sha_set && memcmp(sha, fl->exp_sha, DIGEST_SHA256_LEN) != 0) {
        st->verify_fail_expectation++;
        digest_hex(fl->exp_sha, DIGEST_SHA256_LEN, want);
        return refuse(fl, "verification failed for %.300s: expected sha256 %s (expectation), "
                      "got %s", fl->origin_url, want, got);
    }
    if (fl->hdr_sha_set && memcmp(sha, fl->hdr_sha, DIGEST_SHA256_LEN) != 0) {
        st->verify_fail_repr_digest++;
        digest_hex(fl->hdr_sha, DIGEST_SHA256_LEN, want);
        return refuse(fl, "verification failed for %.300s: expected sha256 %s (upstream "
                      "Repr-Digest), got %s", fl->origin_url, want, got);
    }
    if (fl->md5_expected) {
        unsigned char md5[DIGEST_MD5_LEN];
        char w[2 * DIGEST_MD5_LEN + 1], g[2 * DIGEST_MD5_LEN + 1];
        digest_final(&fl->md5, md5);
        if (memcmp(md5, fl->hdr_md5, sizeof md5) != 0) {
            st->verify_fail_content_md5++;
            digest_hex(fl->hdr_md5, sizeof md5, w);
            digest_hex(md5, sizeof md5, g);
            return refuse(fl, "verification failed for %.300s: expected md5 %s (upstream "
                          "Content-MD5), got %s", fl->origin_url, w, g);
        }
    }
    return 0;
}

/* All bytes are in: verify, then commit (or, not storable, end). */
static void finish(struct fill *fl)
{
    unsigned char bin[DIGEST_SHA256_LEN];
    if (!fl->has_total) {
        fl->has_total = 1;
        fl->total = fl->received;
    }
    digest_final(&fl->sha, bin);
    if (verify(fl, bin) != 0) {
        fail_own(fl);
        return;
    }
    digest_hex(bin, sizeof bin, fl->sha_hex);
    if (!fl->storable) {            /* passed on whole, never stored */
        fill__set_state(fl, FILL_DONE);
        fill__end(fl);
        return;
    }
    fill__commit(fl);
}

static void on_done(struct upstream_xfer *x, CURLcode result)
{
    struct fill *fl = (struct fill *)((char *)x - offsetof(struct fill, xfer));
    uv_timer_stop(&fl->timer);
    if (fl->redirect_to) {
        follow_redirect(fl);
        return;
    }
    if (fl->fallback_pending) {
        char why[48];
        snprintf(why, sizeof why, "it answered %ld", fl->hop_status);
        if (!fall_back_to_origin(fl, why))
            fill__fail(fl, 502, "the parent answered %ld for %.300s, and asking the origin "
                       "failed", fl->hop_status, fl->origin_url);
        return;
    }
    if (fl->fatal) {
        fail_own(fl);
        return;
    }
    if (fl->not_modified && result == CURLE_OK) {
        end_revalidated(fl);
        return;
    }
    if (fl->state != FILL_STREAMING) {
        if (result != CURLE_OK && fl->from_peer) {
            char why[200];
            snprintf(why, sizeof why, "%s", fl->curl_error[0] ? fl->curl_error
                                                              : curl_easy_strerror(result));
            if (says_down(result))
                fill__health_failed(fl, why);
            if (!fall_back_from_peer(fl, why))
                fail_curl(fl, result);
            return;
        }
        if (result != CURLE_OK)
            fail_curl(fl, result);
        else
            fill__fail(fl, 502, "upstream %.300s ended without a response", fl->fetch_url);
        return;
    }
    if (result != CURLE_OK) {
        fill_break(fl, fl->curl_error[0] ? fl->curl_error : curl_easy_strerror(result));
        return;
    }
    if (fl->restarting || (fl->has_total && fl->received != fl->total)) {
        fill_break(fl, "the body ended early");
        return;
    }
    finish(fl);
}

/* ---- who may use the answer ------------------------------------------------------- */

static int same_variant(const char *vary, const char *variant, const struct hdr_source *req)
{
    if (!vary[0])
        return 1;
    if (strcmp(vary, "*") == 0 || !variant)
        return 0;
    char *mine = hdrs_variant_key(req, vary);
    int same = mine && strcmp(mine, variant) == 0;
    free(mine);
    return same;
}

int fill_serves(const struct fill *fl, const struct hdr_source *req, int late, int64_t now,
                const char **why)
{
    switch (fl->state) {
    case FILL_CONNECTING:
    case FILL_FAILED:
        return 1;
    case FILL_REVALIDATED:
        if (fl->fresh_resp && same_variant(fl->fresh_resp->vary, fl->fresh_resp->variant, req))
            return 1;
        *why = "its revalidated response is another variant";
        return 0;
    default:
        break;
    }
    if (fl->fresh.personal) {
        *why = "its answer belongs to the request that fetched it";
        return 0;
    }
    if (!same_variant(fl->vary, fl->variant, req)) {
        *why = "its answer is another variant (Vary)";
        return 0;
    }
    if (late && (!fl->storable || fl->fresh.always_revalidate
                 || (fl->fresh.fresh_until != FRESH_FOREVER && fl->fresh.fresh_until <= now))) {
        *why = "its answer cannot be reused without validation";
        return 0;
    }
    return 1;
}

char *fill_variant_name(const struct fill *fl, const struct hdr_source *req)
{
    if (!fl->answered || !fl->vary[0] || strcmp(fl->vary, "*") == 0)
        return NULL;
    char *mine = hdrs_variant_key(req, fl->vary);
    char *name = NULL;
    if (mine && asprintf(&name, "%s\n%s", fl->key, mine) < 0)
        name = NULL;
    free(mine);
    return name;
}
