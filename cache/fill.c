/*
 * fill — one upstream transfer per key, shared by its readers. The data
 * model and its invariants are in fill.h; this file follows the life of a
 * fill: start -> headers -> body -> end (commit, pass or fail) -> free.
 */
#include "cache/fill.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cache/digest.h"
#include "cache/evict.h"
#include "cache/fresh.h"
#include "cache/index.h"
#include "cache/route.h"
#include "cache/stats.h"
#include "cache/store.h"
#include "cache/http_range.h"
#include "version.h"

#define FILL_MAGIC 0x46696c6cu
#define FILLS_BUCKETS 256
#define PASS_BODY_MAX (16 * 1024)   /* what we keep of an error body */
#define UPSTREAM_BUFFER (256 * 1024)

struct fill {
    unsigned magic;
    struct fills *owner;
    struct fill *hnext;             /* hash chain, while in the table */
    int in_table;
    unsigned refs;
    enum fill_state state;
    char *key;
    char *origin_url;

    int fd;                         /* temp file; -1 after close */
    char tmp_path[PATH_MAX];
    int renamed;                    /* the temp file became a blob */
    uint64_t received;              /* bytes in the temp file */
    struct digest sha;
    struct digest md5;              /* only while md5_expected */
    char sha_hex[DIGEST_SHA256_HEX];

    /* What the bytes must be. */
    int exp_sha_set;                /* a registered expectation */
    unsigned char exp_sha[DIGEST_SHA256_LEN];
    int64_t exp_size;               /* -1: unknown */
    int hdr_sha_set;                /* the upstream's Repr-Digest / Digest */
    unsigned char hdr_sha[DIGEST_SHA256_LEN];
    int md5_expected;               /* the upstream's Content-MD5 / x-ms-blob-content-md5 */
    unsigned char hdr_md5[DIGEST_MD5_LEN];
    char *pending_repr, *pending_digest, *pending_md5, *pending_msmd5; /* this answer's */
    int fatal;                      /* on_body refused for good (fl->error says why) */

    /* Resuming a broken transfer. */
    unsigned attempts;              /* resumes so far */
    char *validator;                /* strong ETag or Last-Modified, for If-Range */
    char *pending_lm;               /* this answer's Last-Modified, raw */
    char *pending_crange;           /* this answer's Content-Range */
    int asked_range;                /* the request in flight carries Range */
    int restarting;                 /* a 200 to a resume: re-reading from 0 */
    uint64_t rewrite_pos;           /* while restarting: bytes compared so far */

    long status;
    int has_total;
    uint64_t total;
    char *content_type;
    char *origin_etag;
    int64_t last_modified;
    int passing;                    /* non-2xx: collecting the body to pass on */
    /* Freshness (RFC 9111) and revalidation of a stored response. */
    char *pending_cc, *pending_expires, *pending_date, *pending_age;
    int no_store;                   /* no-store / private: stream, never commit */
    int64_t fresh_until;            /* for the commit; INT64_MAX immutable */
    int64_t stale_if_error;         /* the response's own bound, -1 none */
    int revalidating;               /* asked with the stored validators */
    struct index_entry stale;       /* while revalidating: the stored response asked about */
    int in_flight;                  /* counted in fills_in_flight until it ends */
    char *cond_etag;                /* If-None-Match */
    int64_t cond_lm;                /* If-Modified-Since, 0 none */
    int not_modified;               /* the upstream answered 304 */
    char *pass_body;
    size_t pass_len;
    int stored;
    int error_status;
    char error[512];
    char curl_error[CURL_ERROR_SIZE];

    struct fill_waiter *waiters;    /* readers waiting for bytes or a state change */
    struct fill *wake_next;         /* on the owner's wake list (holds a reference) */
    int wake_queued;

    struct upstream_xfer xfer;
    struct curl_slist *req_headers;
    char *fetch_url;                /* what is asked: the origin URL, or its DO shape at the parent */
    char *via;                      /* the Via sent upstream: the request's and ours */
    int from_parent;                /* fetch_url is at the parent */
    struct health *health;          /* of fetch_url's host (owned by the table) */
    uv_timer_t timer;               /* stall watch, or the backoff before a resume */
    uv_work_t work;                 /* the commit on the thread pool */
    int commit_rc;
    int new_object;
};

/* What is known of one upstream (an origin, or the parent): whether it
 * answers. After a connection failure it is down: new fills for it fail at
 * once, but for one probe every backoff interval (1 s doubling to 30 s),
 * so clients get a prompt 502 and the upstream is not hammered. Any HTTP
 * answer brings it back up. */
struct health {
    char target[300];               /* scheme://host:port, the port always written */
    int down;
    int64_t last_ok, last_fail;     /* Unix seconds, 0 never */
    unsigned failures;              /* in a row */
    uint64_t next_probe;            /* uv_now() ms: when the next fill may try */
    struct health *next;
};

struct fills {
    struct fills_env env;
    struct fill *buckets[FILLS_BUCKETS];
    unsigned live;                  /* fills not yet freed */
    int closing;
    struct health *health;          /* every upstream asked so far */
    /* Wakes for new bytes are gathered and delivered once per loop turn:
     * curl hands a socket read over in 16 KiB pieces, and waking readers
     * for each would make each client send as small. */
    uv_check_t wake_check;
    struct fill *wake_list;         /* fills with bytes readers have not been told of */
    int check_closed;
};

#define HEALTH_BACKOFF_MIN_MS 1000u
#define HEALTH_BACKOFF_MAX_MS 30000u

static void fill_set_state(struct fill *fl, enum fill_state st);
static void fill_fail(struct fill *fl, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fill_wake_all(struct fill *fl);
static void fill_end(struct fill *fl);
static void table_remove(struct fill *fl);
static void fill_release(struct fill *fl);
static size_t on_header(char *buf, size_t size, size_t n, void *arg);
static size_t on_body(char *buf, size_t size, size_t n, void *arg);
static void on_done(struct upstream_xfer *x, CURLcode result);
static void on_stall(uv_timer_t *t);
static void on_retry(uv_timer_t *t);
static void fill_break(struct fill *fl, const char *why);
static int expects_digest(const struct fill *fl);
static void commit_work(uv_work_t *w);
static void commit_after(uv_work_t *w, int status);

static const char *const state_names[] = {
    [FILL_CONNECTING] = "connecting", [FILL_STREAMING] = "streaming",
    [FILL_PASS] = "pass",             [FILL_COMMITTING] = "committing",
    [FILL_DONE] = "done",             [FILL_FAILED] = "failed",
    [FILL_REVALIDATED] = "revalidated",
};

const char *fill_state_name(enum fill_state s)
{
    return state_names[s];
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/* ---- the table ---------------------------------------------------------- */

static unsigned key_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % FILLS_BUCKETS;
}

int fills_open(struct fills **out, const struct fills_env *env)
{
    struct fills *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->env = *env;
    uv_check_init(env->loop, &f->wake_check);
    f->wake_check.data = f;
    *out = f;
    return 0;
}

static void fills_maybe_free(struct fills *f)
{
    if (f->closing && f->live == 0 && f->check_closed)
        free(f);
}

static void check_closed_cb(uv_handle_t *h)
{
    struct fills *f = h->data;
    f->check_closed = 1;
    fills_maybe_free(f);
}

/* The loop turn's gathered wakes. */
static void deliver_wakes(uv_check_t *c)
{
    struct fills *f = c->data;
    uv_check_stop(c);
    while (f->wake_list) {
        struct fill *fl = f->wake_list;
        f->wake_list = fl->wake_next;
        fl->wake_next = NULL;
        fl->wake_queued = 0;
        fill_wake_all(fl);
        fill_unref(&fl, NULL);
    }
}

/* New bytes: tell the readers at the end of this loop turn. */
static void wake_soon(struct fill *fl)
{
    struct fills *f = fl->owner;
    if (fl->wake_queued || !fl->waiters)
        return;
    fl->wake_queued = 1;
    fill_ref(fl);
    fl->wake_next = f->wake_list;
    f->wake_list = fl;
    uv_check_start(&f->wake_check, deliver_wakes);
}

struct fill *fills_find(struct fills *f, const char *key)
{
    for (struct fill *fl = f->buckets[key_hash(key)]; fl; fl = fl->hnext)
        if (strcmp(fl->key, key) == 0)
            return fl;
    return NULL;
}

static void table_remove(struct fill *fl)
{
    if (!fl->in_table)
        return;
    struct fill **pp = &fl->owner->buckets[key_hash(fl->key)];
    while (*pp != fl)
        pp = &(*pp)->hnext;
    *pp = fl->hnext;
    fl->hnext = NULL;
    fl->in_table = 0;
    struct fill *self = fl;
    fill_unref(&self, NULL);        /* the table's reference */
}

void fills_foreach(struct fills *f, void (*cb)(void *, const struct fill_info *), void *ctx)
{
    for (unsigned b = 0; b < FILLS_BUCKETS; b++)
        for (struct fill *fl = f->buckets[b]; fl; fl = fl->hnext) {
            struct fill_info info;
            fill_info(fl, &info);
            cb(ctx, &info);
        }
}

void fills_close(struct fills **fp)
{
    struct fills *f = *fp;
    if (!f)
        return;
    *fp = NULL;
    f->closing = 1;
    for (unsigned b = 0; b < FILLS_BUCKETS; b++)
        while (f->buckets[b]) {
            struct fill *fl = f->buckets[b];
            upstream_cancel(f->env.upstream, &fl->xfer);
            if (fl->state == FILL_COMMITTING || fl->state == FILL_REVALIDATED) {
                /* Its bytes are all in (or the stored copy stands): the pool
                 * work finishes and drops its reference, and its readers
                 * are woken now to take what there is. */
                fill_end(fl);
                continue;
            }
            fill_fail(fl, 502, "edgecache is shutting down");
        }
    while (f->health) {
        struct health *h = f->health;
        f->health = h->next;
        free(h);
    }
    deliver_wakes(&f->wake_check);
    uv_close((uv_handle_t *)&f->wake_check, check_closed_cb);
}

/* ---- start -------------------------------------------------------------- */

/* ---- upstream health -------------------------------------------------------- */

static struct health *health_of(struct fills *f, const char *url)
{
    char target[300];
    const char *p = strstr(url, "://");
    size_t n = p ? (size_t)(strcspn(p + 3, "/?#") + (size_t)(p + 3 - url)) : strlen(url);
    const char *hostport = p ? p + 3 : url;
    size_t hl = n - (size_t)(hostport - url);
    const char *close_br = memchr(hostport, ']', hl);
    const char *after = close_br ? close_br + 1 : hostport;
    int has_port = memchr(after, ':', hl - (size_t)(after - hostport)) != NULL;
    snprintf(target, sizeof target, "%.*s%s", (int)n, url,
             has_port ? "" : strncmp(url, "https:", 6) == 0 ? ":443" : ":80");
    for (struct health *h = f->health; h; h = h->next)
        if (strcmp(h->target, target) == 0)
            return h;
    struct health *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    snprintf(h->target, sizeof h->target, "%s", target);
    h->next = f->health;
    f->health = h;
    return h;
}

static void health_ok(struct fill *fl)
{
    struct health *h = fl->health;
    if (!h)
        return;
    if (h->down)
        log_msg(fl->owner->env.log, LOG_INFO, "upstream", "%s answers again", h->target);
    h->down = 0;
    h->failures = 0;
    h->last_ok = now_s();
}

static void health_failed(struct fill *fl)
{
    struct health *h = fl->health;
    if (!h)
        return;
    unsigned shift = h->failures < 5 ? h->failures : 5;
    uint64_t backoff = HEALTH_BACKOFF_MIN_MS << shift;
    h->failures++;
    h->down = 1;
    h->last_fail = now_s();
    h->next_probe = uv_now(fl->owner->env.loop)
                    + (backoff < HEALTH_BACKOFF_MAX_MS ? backoff : HEALTH_BACKOFF_MAX_MS);
}

/* 0 when a fill may ask h now (it is up, or this fill is the probe). */
static int health_admit(struct fills *f, struct health *h, char *reason, size_t reasonlen)
{
    uint64_t now = uv_now(f->env.loop);
    if (!h || !h->down)
        return 0;
    if (now >= h->next_probe) {     /* this fill is the probe; others wait for it */
        h->next_probe = now + HEALTH_BACKOFF_MAX_MS;
        return 0;
    }
    snprintf(reason, reasonlen, "upstream %s is unreachable (last success %s%lld s ago); "
             "the next attempt is in %llu ms", h->target, h->last_ok ? "" : "never: ",
             h->last_ok ? (long long)(now_s() - h->last_ok) : 0LL,
             (unsigned long long)(h->next_probe - now));
    return -1;
}

void fills_foreach_upstream(struct fills *f, void (*cb)(void *, const struct fills_upstream *),
                            void *ctx)
{
    for (struct health *h = f->health; h; h = h->next) {
        struct fills_upstream u = {h->target, !h->down, h->last_ok, h->last_fail, h->failures};
        cb(ctx, &u);
    }
}

/* ---- the upstream request ------------------------------------------------------ */

/* Accept-Encoding, Via, and If-Range when resuming. */
static struct curl_slist *request_headers(const struct fill *fl, const char *if_range)
{
    char line[1200];
    struct curl_slist *h = curl_slist_append(NULL, "Accept-Encoding: identity");
    snprintf(line, sizeof line, "Via: %s", fl->via);
    h = curl_slist_append(h, line);
    if (if_range) {
        snprintf(line, sizeof line, "If-Range: %s", if_range);
        h = curl_slist_append(h, line);
    } else if (fl->revalidating && fl->received == 0) {
        if (fl->cond_etag) {
            snprintf(line, sizeof line, "If-None-Match: %s", fl->cond_etag);
            h = curl_slist_append(h, line);
        }
        if (fl->cond_lm > 0) {
            char date[64];
            http_date_format((time_t)fl->cond_lm, date, sizeof date);
            snprintf(line, sizeof line, "If-Modified-Since: %s", date);
            h = curl_slist_append(h, line);
        }
    }
    return h;
}

/* Where to ask: the parent in DO shape, or the origin. */
static int choose_upstream(struct fill *fl, const char *via_in)
{
    const struct cfg *cfg = fl->owner->env.cfg;
    fl->from_parent = cfg->parent && cfg->parent[0];
    fl->fetch_url = fl->from_parent ? route_do_url(cfg->parent, fl->origin_url)
                                    : strdup(fl->origin_url);
    if (asprintf(&fl->via, "%s%s1.1 %s (edgecache/%s)", via_in ? via_in : "",
                 via_in ? ", " : "", cfg->node_id, EDGECACHE_VERSION) < 0)
        fl->via = NULL;
    if (!fl->fetch_url || !fl->via)
        return -1;
    fl->health = health_of(fl->owner, fl->fetch_url);
    return 0;
}

static int setup_easy(struct fill *fl)
{
    const struct cfg *cfg = fl->owner->env.cfg;
    CURL *e = upstream_easy(cfg->connect_timeout_ms, fl->curl_error);
    if (!e)
        return -1;
    fl->xfer.easy = e;
    fl->xfer.done = on_done;
    fl->req_headers = request_headers(fl, NULL);
    curl_easy_setopt(e, CURLOPT_URL, fl->fetch_url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, fl->req_headers);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)UPSTREAM_BUFFER);
    curl_easy_setopt(e, CURLOPT_FILETIME, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, fl);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, fl);
    return 0;
}

struct fill *fills_start(struct fills *f, const struct fill_request *rq, int *status,
                         char *reason, size_t reasonlen)
{
    const char *key = rq->key, *origin_url = rq->origin_url, *via = rq->via;
    const struct index_expected *expect = rq->expect;
    *status = 503;
    struct fill *fl = calloc(1, sizeof *fl);
    if (!fl || !(fl->key = strdup(key)) || !(fl->origin_url = strdup(origin_url))) {
        snprintf(reason, reasonlen, "out of memory");
        goto fail;
    }
    fl->magic = FILL_MAGIC;
    fl->owner = f;
    fl->exp_size = -1;
    if (rq->stale && (rq->stale->origin_etag || rq->stale->last_modified > 0)) {
        fl->revalidating = 1;
        fl->cond_etag = rq->stale->origin_etag ? strdup(rq->stale->origin_etag) : NULL;
        fl->cond_lm = rq->stale->last_modified;
        if (index_entry_copy(&fl->stale, rq->stale) != 0) {
            snprintf(reason, reasonlen, "out of memory");
            goto fail;
        }
    }
    if (expect && digest_from_hex(expect->sha256, fl->exp_sha, sizeof fl->exp_sha) == 0) {
        fl->exp_sha_set = 1;
        fl->exp_size = expect->size;
        digest_hex(fl->exp_sha, sizeof fl->exp_sha, fl->sha_hex); /* replaced by the real one */
    }
    fl->fd = store_temp_create(f->env.store, fl->tmp_path, sizeof fl->tmp_path);
    if (fl->fd < 0) {
        snprintf(reason, reasonlen, "cannot create a temp file in %s: %s",
                 f->env.store->tmp_dir, strerror(errno));
        goto fail;
    }
    if (choose_upstream(fl, via) != 0) {
        snprintf(reason, reasonlen, "cannot make the upstream request for %s", origin_url);
        goto fail;
    }
    if (health_admit(f, fl->health, reason, reasonlen) != 0) {
        *status = 502;
        goto fail;
    }
    if (digest_init(&fl->sha) != 0 || setup_easy(fl) != 0) {
        snprintf(reason, reasonlen, "cannot set up the upstream transfer");
        goto fail;
    }
    uv_timer_init(f->env.loop, &fl->timer);
    fl->timer.data = fl;
    f->live++;
    if (upstream_start(f->env.upstream, &fl->xfer) != 0) {
        snprintf(reason, reasonlen, "cannot start the upstream transfer");
        fl->refs = 1;
        fill_release(fl);
        return NULL;
    }
    uv_timer_start(&fl->timer, on_stall, f->env.cfg->stall_timeout_ms, 0);
    unsigned b = key_hash(key);
    fl->hnext = f->buckets[b];
    f->buckets[b] = fl;
    fl->in_table = 1;
    fl->refs = 2;                   /* the table's and the caller's */
    f->env.stats->fills_started++;
    f->env.stats->fills_in_flight++;
    fl->in_flight = 1;
    f->env.stats->upstream_requests++;
    log_msg(f->env.log, LOG_INFO, "fill", "start %s%s%s", origin_url,
            fl->from_parent ? " via the parent as " : "", fl->from_parent ? fl->fetch_url : "");
    return fl;
fail:
    if (fl) {
        if (fl->fd >= 0 && fl->tmp_path[0]) {
            close(fl->fd);
            unlink(fl->tmp_path);
        }
        if (fl->xfer.easy)
            curl_easy_cleanup(fl->xfer.easy);
        curl_slist_free_all(fl->req_headers);
        digest_free(&fl->sha);
        digest_free(&fl->md5);
        free(fl->fetch_url);
        free(fl->via);
        free(fl->cond_etag);
        index_entry_free(&fl->stale);
        free(fl->key);
        free(fl->origin_url);
        free(fl);
    }
    return NULL;
}

/* ---- references and waiters ---------------------------------------------- */

void fill_ref(struct fill *fl)
{
    fl->refs++;
}

void fill_detach(struct fill *fl)
{
    if (fl->in_table)
        log_msg(fl->owner->env.log, LOG_DEBUG, "fill", "%s: left the table (%s): it serves only "
                "its readers", fl->origin_url, state_names[fl->state]);
    table_remove(fl);
}

void fill_wait(struct fill *fl, struct fill_waiter *w)
{
    if (w->waiting)
        return;
    w->prev = NULL;
    w->next = fl->waiters;
    if (fl->waiters)
        fl->waiters->prev = w;
    fl->waiters = w;
    w->waiting = 1;
}

void fill_unwait(struct fill *fl, struct fill_waiter *w)
{
    if (!w->waiting)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        fl->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->next = w->prev = NULL;
    w->waiting = 0;
}

/* Wakes every waiter once. The list is taken first, so a waiter that waits
 * again from its wake callback is not woken twice in one round. */
static void fill_wake_all(struct fill *fl)
{
    struct fill_waiter *list = fl->waiters;
    fl->waiters = NULL;
    while (list) {
        struct fill_waiter *w = list;
        list = w->next;
        if (list)
            list->prev = NULL;
        w->next = w->prev = NULL;
        w->waiting = 0;
        w->wake(w);
    }
}

static void fill_closed(uv_handle_t *h)
{
    struct fill *fl = h->data;
    struct fills *owner = fl->owner;
    free(fl);
    owner->live--;
    fills_maybe_free(owner);
}

/* Unlinking a temp file is disk work: the thread pool does it. */
struct discard_req {
    uv_work_t work;
    const struct store *store;
    char path[PATH_MAX];
};

static void discard_work(uv_work_t *w)
{
    struct discard_req *d = w->data;
    store_temp_discard(d->store, d->path);
}

static void discard_after(uv_work_t *w, int status)
{
    (void)status;
    free(w->data);
}

static void discard_temp(struct fill *fl)
{
    struct discard_req *d = malloc(sizeof *d);
    if (!d) {
        unlink(fl->tmp_path);
        return;
    }
    d->work.data = d;
    d->store = fl->owner->env.store;
    memcpy(d->path, fl->tmp_path, sizeof d->path);
    if (uv_queue_work(fl->owner->env.loop, &d->work, discard_work, discard_after) != 0) {
        unlink(fl->tmp_path);
        free(d);
    }
}

static void fill_release(struct fill *fl)
{
    if (fl->fd >= 0)
        close(fl->fd);
    fl->fd = -1;
    if (!fl->renamed)
        discard_temp(fl);
    if (fl->xfer.easy) {
        upstream_cancel(fl->owner->env.upstream, &fl->xfer);
        curl_easy_cleanup(fl->xfer.easy);
    }
    curl_slist_free_all(fl->req_headers);
    digest_free(&fl->sha);
    free(fl->key);
    free(fl->origin_url);
    free(fl->content_type);
    free(fl->origin_etag);
    free(fl->pass_body);
    free(fl->validator);
    free(fl->cond_etag);
    index_entry_free(&fl->stale);
    free(fl->pending_cc);
    free(fl->pending_expires);
    free(fl->pending_date);
    free(fl->pending_age);
    free(fl->fetch_url);
    free(fl->via);
    free(fl->pending_lm);
    free(fl->pending_crange);
    free(fl->pending_repr);
    free(fl->pending_digest);
    free(fl->pending_md5);
    free(fl->pending_msmd5);
    digest_free(&fl->md5);
    fl->magic = 0;
    uv_timer_stop(&fl->timer);
    uv_close((uv_handle_t *)&fl->timer, fill_closed);
}

void fill_unref(struct fill **flp, struct fill_waiter *w)
{
    struct fill *fl = *flp;
    if (!fl)
        return;
    *flp = NULL;
    if (w)
        fill_unwait(fl, w);
    if (--fl->refs == 0)
        fill_release(fl);
}

/* ---- what readers see ------------------------------------------------------ */

void fill_info(const struct fill *fl, struct fill_info *out)
{
    *out = (struct fill_info){
        .state = fl->state,
        .key = fl->key,
        .origin_url = fl->origin_url,
        .status = fl->status,
        .has_total = fl->has_total,
        .total = fl->total,
        .received = fl->received,
        .content_type = fl->content_type,
        .last_modified = fl->last_modified,
        .error_status = fl->error_status,
        .error = fl->error,
        .pass_body = fl->pass_body,
        .pass_len = fl->pass_len,
        .sha256_hex = fl->state == FILL_DONE ? fl->sha_hex : fl->exp_sha_set ? fl->sha_hex : NULL,
        .attempts = fl->attempts,
        .cache_control = fl->state == FILL_STREAMING || fl->state == FILL_COMMITTING
                             || fl->state == FILL_DONE ? fl->pending_cc : NULL,
        .stored = fl->stored,
        .revalidating = fl->revalidating
                        && (fl->state == FILL_CONNECTING || fl->state == FILL_REVALIDATED),
        .stale = fl->revalidating ? &fl->stale : NULL,
        /* every reference but the table's and a running commit's is a reader */
        .readers = fl->refs - (unsigned)fl->in_table - (fl->state == FILL_COMMITTING),
    };
}

static int expects_digest(const struct fill *fl)
{
    return fl->exp_sha_set || fl->hdr_sha_set || fl->md5_expected;
}

uint64_t fill_readable(const struct fill *fl)
{
    switch (fl->state) {
    case FILL_STREAMING:
        /* the last byte waits for the verdict when there is one to wait for */
        return expects_digest(fl) && fl->received ? fl->received - 1 : fl->received;
    case FILL_COMMITTING:
    case FILL_DONE:
        return fl->received;
    default:
        return 0;
    }
}

ssize_t fill_pread(const struct fill *fl, void *buf, size_t len, uint64_t offset)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fl->fd, (char *)buf + done, len - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

int fill_dup_fd(const struct fill *fl)
{
    return fl->fd >= 0 ? fcntl(fl->fd, F_DUPFD_CLOEXEC, 0) : -1;
}

/* ---- state changes --------------------------------------------------------- */

/* A fill that reached its end: it leaves the table (new requests no longer
 * join it) and every waiting reader is woken to see how it ended. */
static void fill_end(struct fill *fl)
{
    struct fill *keep = fl;
    fill_ref(keep);                 /* waking may drop the readers' references */
    if (fl->in_flight) {
        fl->in_flight = 0;
        fl->owner->env.stats->fills_in_flight--;
    }
    table_remove(fl);
    fill_wake_all(fl);
    fill_unref(&keep, NULL);
}

static void fill_set_state(struct fill *fl, enum fill_state st)
{
    log_msg(fl->owner->env.log, LOG_DEBUG, "fill", "%s: %s -> %s", fl->origin_url,
            state_names[fl->state], state_names[st]);
    fl->state = st;
}

static void fill_fail(struct fill *fl, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fl->error, sizeof fl->error, fmt, ap);
    va_end(ap);
    fl->error_status = status;
    uv_timer_stop(&fl->timer);
    upstream_cancel(fl->owner->env.upstream, &fl->xfer);
    fill_set_state(fl, FILL_FAILED);
    fl->owner->env.stats->fills_failed++;
    log_msg(fl->owner->env.log, LOG_WARN, "fill", "failed %s after %llu bytes: %s",
            fl->origin_url, (unsigned long long)fl->received, fl->error);
    fill_end(fl);
}

static void stall_rearm(struct fill *fl)
{
    uv_timer_start(&fl->timer, on_stall, fl->owner->env.cfg->stall_timeout_ms, 0);
}

static void on_stall(uv_timer_t *t)
{
    struct fill *fl = t->data;
    char why[160];
    snprintf(why, sizeof why, "sent nothing for %llu ms (config key: stall_timeout)",
             (unsigned long long)fl->owner->env.cfg->stall_timeout_ms);
    upstream_cancel(fl->owner->env.upstream, &fl->xfer);
    if (fl->state == FILL_STREAMING) {
        fill_break(fl, why);
        return;
    }
    /* no answer at all: as unreachable as a refused connection */
    health_failed(fl);
    fill_fail(fl, 504, "upstream %s %s", fl->fetch_url, why);
}

/* ---- what the upstream's headers say ------------------------------------------ */

static void set_str(char **dst, const char *v, size_t n)
{
    free(*dst);
    *dst = strndup(v, n);
}

/* "Name: value\r\n": is it `name`? Then *v, *n are the trimmed value. */
static int header_is(const char *buf, size_t len, const char *name, const char **v, size_t *n)
{
    size_t nl = strlen(name);
    if (len <= nl || strncasecmp(buf, name, nl) != 0 || buf[nl] != ':')
        return 0;
    const char *p = buf + nl + 1, *end = buf + len;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    while (end > p && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *v = p;
    *n = (size_t)(end - p);
    return 1;
}

static void clear_pending(struct fill *fl)
{
    char **all[] = {&fl->origin_etag,   &fl->pending_lm,      &fl->pending_crange,
                    &fl->pending_repr,  &fl->pending_digest,  &fl->pending_md5,
                    &fl->pending_msmd5, &fl->pending_cc,      &fl->pending_expires,
                    &fl->pending_date,  &fl->pending_age};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(*all[i]);
        *all[i] = NULL;
    }
}

static void remember_header(struct fill *fl, const char *buf, size_t len)
{
    static const struct { const char *name; size_t off; } wanted[] = {
        {"etag", offsetof(struct fill, origin_etag)},
        {"last-modified", offsetof(struct fill, pending_lm)},
        {"content-range", offsetof(struct fill, pending_crange)},
        {"repr-digest", offsetof(struct fill, pending_repr)},
        {"digest", offsetof(struct fill, pending_digest)},
        {"content-md5", offsetof(struct fill, pending_md5)},
        {"x-ms-blob-content-md5", offsetof(struct fill, pending_msmd5)},
        {"cache-control", offsetof(struct fill, pending_cc)},
        {"expires", offsetof(struct fill, pending_expires)},
        {"date", offsetof(struct fill, pending_date)},
        {"age", offsetof(struct fill, pending_age)},
    };
    const char *v;
    size_t n;
    for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++)
        if (header_is(buf, len, wanted[i].name, &v, &n)) {
            set_str((char **)((char *)fl + wanted[i].off), v, n);
            return;
        }
}

/* The base64 value of `label` in a digest field: "sha-256=:B64:" in
 * Repr-Digest (colons), "SHA-256=B64" in Digest (up to ',' or ';'). */
static int digest_field(const char *field, const char *label, int colons, unsigned char *out,
                        size_t outlen)
{
    char b64[100];
    size_t ll = strlen(label);
    for (const char *p = field; p && *p; p = strchr(p, ',')) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, label, ll) != 0 || p[ll] != '=')
            continue;
        const char *v = p + ll + 1;
        if (colons && *v++ != ':')
            return -1;
        size_t n = strcspn(v, colons ? ":" : ",; \t");
        if (n >= sizeof b64)
            return -1;
        memcpy(b64, v, n);
        b64[n] = '\0';
        return digest_from_base64(b64, out, outlen);
    }
    return -1;
}

/* Takes the digests the upstream's first answer declares. */
static void adopt_upstream_digests(struct fill *fl)
{
    if (fl->pending_repr
        && digest_field(fl->pending_repr, "sha-256", 1, fl->hdr_sha, sizeof fl->hdr_sha) == 0)
        fl->hdr_sha_set = 1;
    else if (fl->pending_digest
             && digest_field(fl->pending_digest, "sha-256", 0, fl->hdr_sha, sizeof fl->hdr_sha) == 0)
        fl->hdr_sha_set = 1;
    const char *md5 = fl->pending_msmd5 ? fl->pending_msmd5 : fl->pending_md5;
    if (md5 && digest_from_base64(md5, fl->hdr_md5, sizeof fl->hdr_md5) == 0
        && digest_init_md5(&fl->md5) == 0)
        fl->md5_expected = 1;
}

/* If-Range needs a strong validator: a strong ETag, else Last-Modified. */
static void adopt_validator(struct fill *fl)
{
    free(fl->validator);
    fl->validator = NULL;
    if (fl->origin_etag && fl->origin_etag[0] == '"')
        fl->validator = strdup(fl->origin_etag);
    else if (fl->pending_lm)
        fl->validator = strdup(fl->pending_lm);
}

/* How long what the upstream just said stays fresh. Content whose SHA-256
 * is known, or from an origin listed in `immutable`, never goes stale. */
static void evaluate_freshness(struct fill *fl, int64_t last_modified)
{
    const struct cfg *cfg = fl->owner->env.cfg;
    struct fresh_input in = {
        .cache_control = fl->pending_cc, .expires = fl->pending_expires,
        .date = fl->pending_date, .age = fl->pending_age, .last_modified = last_modified,
        .now = now_s(), .heuristic_max_age = (int64_t)(cfg->heuristic_max_age_ms / 1000),
    };
    struct fresh_result fr;
    fresh_evaluate(&in, &fr);
    fl->no_store = !fr.storable;
    fl->stale_if_error = fr.stale_if_error;
    fl->fresh_until = fl->exp_sha_set || route_immutable(cfg, fl->origin_url) ? FRESH_FOREVER
                                                                            : fr.fresh_until;
}

/* The first 200: what the fill is. */
static void first_answer(struct fill *fl, curl_off_t len)
{
    const struct cfg *cfg = fl->owner->env.cfg;
    evaluate_freshness(fl, fl->last_modified);
    fl->has_total = len >= 0;
    fl->total = len >= 0 ? (uint64_t)len : 0;
    adopt_upstream_digests(fl);
    adopt_validator(fl);
    if (cfg->require_verified && !expects_digest(fl)) {
        fl->owner->env.stats->unverified_refused++;
        snprintf(fl->error, sizeof fl->error,
                 "refused %s: no expected digest (no registered expectation, no digest "
                 "header from the upstream) and require_verified is on (config key: "
                 "require_verified)", fl->origin_url);
        fl->fatal = 1;
        return;
    }
    if (fl->exp_size >= 0 && fl->has_total && (uint64_t)fl->exp_size != fl->total) {
        fl->owner->env.stats->verify_fail_expectation++;
        snprintf(fl->error, sizeof fl->error,
                 "verification failed for %s: expected size %lld (expectation), upstream "
                 "Content-Length %llu", fl->origin_url, (long long)fl->exp_size,
                 (unsigned long long)fl->total);
        fl->fatal = 1;
        return;
    }
    fill_set_state(fl, FILL_STREAMING);
    fill_wake_all(fl);
}

/* "bytes A-B/T": A must be what we have and T what we expect. */
static int resume_range_ok(const struct fill *fl)
{
    unsigned long long a, b, t;
    if (!fl->pending_crange
        || sscanf(fl->pending_crange, "bytes %llu-%llu/%llu", &a, &b, &t) != 3)
        return 0;
    return a == fl->received && (!fl->has_total || (t == fl->total && b + 1 == t));
}

/* An answer to a resume: 206 continues, 200 restarts from byte 0. */
static void resume_answer(struct fill *fl, curl_off_t len)
{
    if (fl->status == 206 && fl->asked_range && resume_range_ok(fl)) {
        log_msg(fl->owner->env.log, LOG_INFO, "fill", "resumed %s at byte %llu", fl->origin_url,
                (unsigned long long)fl->received);
        return;
    }
    /* A 200 with another strong ETag than the one we resumed with is
     * another object: no need to read it to know. */
    int other_etag = fl->validator && fl->validator[0] == '"' && fl->origin_etag
                     && strcmp(fl->origin_etag, fl->validator) != 0;
    if (fl->status == 200 && !other_etag
        && (!fl->has_total || (len >= 0 && (uint64_t)len == fl->total))) {
        fl->owner->env.stats->fill_restarts++;
        fl->restarting = 1;
        fl->rewrite_pos = 0;
        digest_init(&fl->sha);
        if (fl->md5_expected)
            digest_init_md5(&fl->md5);
        log_msg(fl->owner->env.log, LOG_WARN, "fill",
                "upstream %s answered the resume with the whole body: re-reading it and "
                "comparing the %llu bytes already received", fl->origin_url,
                (unsigned long long)fl->received);
        return;
    }
    snprintf(fl->error, sizeof fl->error,
             "upstream %s answered %ld%s to a resume at byte %llu: the object changed",
             fl->origin_url, fl->status, fl->status == 206 ? " with another range" : "",
             (unsigned long long)fl->received);
    fl->fatal = 1;
}

/* The blank line that ends a response's header block: decide what the
 * fill is. Only 200 is stored; any other status is passed on. */
static void headers_done(struct fill *fl)
{
    CURL *e = fl->xfer.easy;
    curl_off_t len = -1, filetime = -1;
    char *ctype = NULL;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &fl->status);
    if (fl->status >= 100 && fl->status < 200)
        return;                     /* an interim response; the real one follows */
    health_ok(fl);
    curl_easy_getinfo(e, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
    if (fl->state == FILL_STREAMING) {
        resume_answer(fl, len);
        return;
    }
    if (fl->status == 304 && fl->revalidating) {
        fl->not_modified = 1;           /* the stored response is still good */
        evaluate_freshness(fl, fl->cond_lm);
        return;
    }
    curl_easy_getinfo(e, CURLINFO_FILETIME_T, &filetime);
    curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ctype);
    free(fl->content_type);
    fl->content_type = ctype ? strdup(ctype) : NULL;
    fl->last_modified = filetime > 0 ? (int64_t)filetime : 0;
    if (fl->status != 200) {
        fl->passing = 1;
        return;
    }
    first_answer(fl, len);
}

static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
    struct fill *fl = arg;
    size_t len = size * n;
    stall_rearm(fl);
    if (len >= 5 && strncasecmp(buf, "HTTP/", 5) == 0) {
        fl->passing = 0;            /* a new response (after 1xx) */
        clear_pending(fl);
    } else if ((len == 2 && buf[0] == '\r') || (len == 1 && buf[0] == '\n')) {
        headers_done(fl);
        if (fl->fatal)
            return 0;               /* stop the transfer; on_done fails the fill */
    } else {
        remember_header(fl, buf, len);
    }
    return len;
}

/* ---- the body ---------------------------------------------------------------- */

static size_t pass_append(struct fill *fl, const char *buf, size_t len)
{
    size_t room = PASS_BODY_MAX - fl->pass_len;
    size_t take = len < room ? len : room;
    if (!fl->pass_body && !(fl->pass_body = malloc(PASS_BODY_MAX)))
        return 0;
    memcpy(fl->pass_body + fl->pass_len, buf, take);
    fl->pass_len += take;
    return len;                     /* the rest is read and dropped */
}

static int refuse(struct fill *fl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(struct fill *fl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fl->error, sizeof fl->error, fmt, ap);
    va_end(ap);
    fl->fatal = 1;
    return -1;
}

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
            return refuse(fl, "upstream %s sent other bytes at offset %llu after a restart: "
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
        fl->owner->env.stats->verify_fail_content_length++;
        return refuse(fl, "verification failed for %s: upstream sent more than its "
                      "Content-Length %llu", fl->origin_url, (unsigned long long)fl->total);
    }
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(fl->fd, buf + done, len - done, (off_t)(fl->received + done));
        if (w < 0 && errno == EINTR)
            continue;
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
    stall_rearm(fl);
    fl->owner->env.stats->upstream_bytes += len;
    if (fl->passing)
        return pass_append(fl, buf, len);
    if (fl->state != FILL_STREAMING || fl->fatal)
        return 0;
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
    wake_soon(fl);
    return len;
}

/* ---- the end of the transfer ------------------------------------------------ */

static void end_pass(struct fill *fl)
{
    uv_timer_stop(&fl->timer);
    fill_set_state(fl, FILL_PASS);
    fl->owner->env.stats->fills_failed++;
    log_msg(fl->owner->env.log, LOG_INFO, "fill", "upstream %s answered %ld: passed on, not stored",
            fl->origin_url, fl->status);
    fill_end(fl);
}

/* A 304: the stored response is fresh again. Its row is refreshed on the
 * thread pool; readers serve it from the store. The fill stays in the table
 * until the row is written, so a request that comes meanwhile joins it
 * instead of revalidating once more. */
struct refresh_req {
    uv_work_t work;
    struct fill *fill;              /* a reference */
    int64_t now;
};

static void refresh_work(uv_work_t *w)
{
    struct refresh_req *r = w->data;
    struct fill *fl = r->fill;
    index_refresh_url(fl->owner->env.index, fl->key, fl->fresh_until, fl->stale_if_error, r->now);
}

static void refresh_after(uv_work_t *w, int status)
{
    struct refresh_req *r = w->data;
    (void)status;
    fill_end(r->fill);              /* wakes whoever joined meanwhile */
    fill_unref(&r->fill, NULL);
    free(r);
}

static void end_revalidated(struct fill *fl)
{
    const struct fills_env *env = &fl->owner->env;
    env->stats->revalidated++;
    log_msg(env->log, LOG_DEBUG, "fill", "%s not modified: fresh again", fl->origin_url);
    fill_set_state(fl, FILL_REVALIDATED);
    struct refresh_req *r = calloc(1, sizeof *r);
    if (r) {
        r->fill = fl;
        r->now = now_s();
        fill_ref(fl);
        r->work.data = r;
    }
    if (!r || uv_queue_work(env->loop, &r->work, refresh_work, refresh_after) != 0) {
        if (r)
            fill_unref(&r->fill, NULL);
        free(r);
        fill_end(fl);
        return;
    }
    fill_wake_all(fl);
}

static void fail_own(struct fill *fl)
{
    char own[sizeof fl->error];
    memcpy(own, fl->error, sizeof own);
    fill_fail(fl, 502, "%s", own);
}

/* parent_fallback_to_origin: ask the origin instead, once. */
static int fall_back_to_origin(struct fill *fl, const char *why)
{
    const struct fills_env *env = &fl->owner->env;
    if (!fl->from_parent || !env->cfg->parent_fallback_to_origin)
        return 0;
    log_msg(env->log, LOG_WARN, "fill", "parent failed for %s (%s): asking the origin",
            fl->origin_url, why);
    free(fl->fetch_url);
    fl->fetch_url = strdup(fl->origin_url);
    fl->from_parent = 0;
    fl->health = health_of(fl->owner, fl->fetch_url);
    fl->passing = 0;
    fl->pass_len = 0;
    fl->curl_error[0] = '\0';
    env->stats->parent_fallbacks++;
    env->stats->upstream_requests++;
    curl_easy_setopt(fl->xfer.easy, CURLOPT_URL, fl->fetch_url);
    if (!fl->fetch_url || upstream_start(env->upstream, &fl->xfer) != 0)
        return 0;
    stall_rearm(fl);
    return 1;
}

static void fail_curl(struct fill *fl, CURLcode result)
{
    const char *what = fl->curl_error[0] ? fl->curl_error : curl_easy_strerror(result);
    health_failed(fl);
    if (fall_back_to_origin(fl, what))
        return;
    if (result == CURLE_OPERATION_TIMEDOUT)
        fill_fail(fl, 504, "upstream %s timed out: %s (config key: connect_timeout)",
                  fl->fetch_url, what);
    else
        fill_fail(fl, 502, "upstream %s unreachable: %s", fl->fetch_url, what);
}

/* The upstream broke off mid-body: resume after a backoff, or give up. */
static void fill_break(struct fill *fl, const char *why)
{
    const struct fills_env *env = &fl->owner->env;
    if (fl->attempts >= env->cfg->resume_attempts) {
        if (fl->has_total && fl->received < fl->total)
            env->stats->verify_fail_content_length++;
        char total[32] = "?";
        if (fl->has_total)
            snprintf(total, sizeof total, "%llu", (unsigned long long)fl->total);
        fill_fail(fl, 502, "upstream %s broke off %u time%s (resume_attempts is %llu), "
                  "%llu of %s bytes received; last: %s", fl->origin_url, fl->attempts + 1,
                  fl->attempts ? "s" : "", (unsigned long long)env->cfg->resume_attempts,
                  (unsigned long long)fl->received, total, why);
        return;
    }
    fl->attempts++;
    uint64_t delay = 100u << (fl->attempts - 1 < 5 ? fl->attempts - 1 : 5);
    log_msg(env->log, LOG_WARN, "fill", "upstream %s broke off at byte %llu (%s): resuming "
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
    const struct fills_env *env = &fl->owner->env;
    char range[48], if_range[1];
    (void)if_range;
    curl_slist_free_all(fl->req_headers);
    fl->asked_range = fl->received > 0 && fl->validator;
    if (fl->asked_range)
        snprintf(range, sizeof range, "%llu-", (unsigned long long)fl->received);
    fl->req_headers = request_headers(fl, fl->asked_range ? fl->validator : NULL);
    curl_easy_setopt(fl->xfer.easy, CURLOPT_HTTPHEADER, fl->req_headers);
    curl_easy_setopt(fl->xfer.easy, CURLOPT_RANGE, fl->asked_range ? range : NULL);
    fl->curl_error[0] = '\0';
    fl->status = 0;
    env->stats->fill_resumes++;
    env->stats->upstream_requests++;
    if (upstream_start(env->upstream, &fl->xfer) != 0) {
        fill_fail(fl, 502, "cannot restart the upstream transfer for %s", fl->origin_url);
        return;
    }
    stall_rearm(fl);
}

/* Every check the fill knows of, in order; counts and logs the first that
 * fails. Returns 0 when the bytes are what they must be. */
static int verify(struct fill *fl, const unsigned char sha[DIGEST_SHA256_LEN])
{
    struct stats *st = fl->owner->env.stats;
    char want[DIGEST_SHA256_HEX], got[DIGEST_SHA256_HEX];
    digest_hex(sha, DIGEST_SHA256_LEN, got);
    if (fl->exp_size >= 0 && (uint64_t)fl->exp_size != fl->received) {
        st->verify_fail_expectation++;
        return refuse(fl, "verification failed for %s: expected %lld bytes (expectation), got %llu",
                      fl->origin_url, (long long)fl->exp_size, (unsigned long long)fl->received);
    }
    if (fl->exp_sha_set && memcmp(sha, fl->exp_sha, DIGEST_SHA256_LEN) != 0) {
        st->verify_fail_expectation++;
        digest_hex(fl->exp_sha, DIGEST_SHA256_LEN, want);
        return refuse(fl, "verification failed for %s: expected sha256 %s (expectation), got %s",
                      fl->origin_url, want, got);
    }
    if (fl->hdr_sha_set && memcmp(sha, fl->hdr_sha, DIGEST_SHA256_LEN) != 0) {
        st->verify_fail_repr_digest++;
        digest_hex(fl->hdr_sha, DIGEST_SHA256_LEN, want);
        return refuse(fl, "verification failed for %s: expected sha256 %s (upstream Repr-Digest), "
                      "got %s", fl->origin_url, want, got);
    }
    if (fl->md5_expected) {
        unsigned char md5[DIGEST_MD5_LEN];
        char w[2 * DIGEST_MD5_LEN + 1], g[2 * DIGEST_MD5_LEN + 1];
        digest_final(&fl->md5, md5);
        if (memcmp(md5, fl->hdr_md5, sizeof md5) != 0) {
            st->verify_fail_content_md5++;
            digest_hex(fl->hdr_md5, sizeof md5, w);
            digest_hex(md5, sizeof md5, g);
            return refuse(fl, "verification failed for %s: expected md5 %s (upstream Content-MD5), "
                          "got %s", fl->origin_url, w, g);
        }
    }
    return 0;
}

static const char *verified_by(const struct fill *fl)
{
    if (fl->exp_sha_set)
        return "expectation";
    if (fl->hdr_sha_set)
        return "repr-digest";
    if (fl->md5_expected)
        return "content-md5";
    return "unverified";
}

/* All bytes are in: verify, then commit on the thread pool. */
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
    if (fl->no_store) {             /* passed on whole, never stored */
        log_msg(fl->owner->env.log, LOG_INFO, "fill", "%s: no-store or private: not stored",
                fl->origin_url);
        fill_set_state(fl, FILL_DONE);
        fill_end(fl);
        return;
    }
    fill_set_state(fl, FILL_COMMITTING);
    fl->work.data = fl;
    fill_ref(fl);                   /* the commit's reference */
    if (uv_queue_work(fl->owner->env.loop, &fl->work, commit_work, commit_after) != 0) {
        fl->commit_rc = -EAGAIN;
        commit_after(&fl->work, 0);
    }
}

static void on_done(struct upstream_xfer *x, CURLcode result)
{
    struct fill *fl = (struct fill *)((char *)x - offsetof(struct fill, xfer));
    uv_timer_stop(&fl->timer);
    if (fl->passing && (result == CURLE_OK || result == CURLE_WRITE_ERROR)) {
        char why[32];
        snprintf(why, sizeof why, "it answered %ld", fl->status);
        if (fl->status >= 500 && fl->status != 508 && fall_back_to_origin(fl, why))
            return;
        end_pass(fl);
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
        if (result != CURLE_OK)
            fail_curl(fl, result);
        else
            fill_fail(fl, 502, "upstream %s ended without a response", fl->origin_url);
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

/* Thread pool: fsync, rename, index row. Touches only what no loop-thread
 * code changes while the fill is COMMITTING. */
static void commit_work(uv_work_t *w)
{
    struct fill *fl = w->data;
    const struct fills_env *env = &fl->owner->env;
    fl->commit_rc = store_commit(env->store, fl->fd, fl->tmp_path, fl->sha_hex);
    if (fl->commit_rc != 0)
        return;
    fl->renamed = 1;
    struct index_commit c = {
        .key = fl->key,
        .origin_url = fl->origin_url,
        .sha256 = fl->sha_hex,
        .size = fl->total,
        .content_type = fl->content_type,
        .origin_etag = fl->origin_etag,
        .last_modified = fl->last_modified,
        .now = now_s(),
        .verified_by = verified_by(fl),
        .fresh_until = fl->fresh_until,
        .stale_if_error = fl->stale_if_error,
        .cache_control = fl->pending_cc,
    };
    if (index_commit_object(env->index, &c, &fl->new_object) != 0)
        fl->commit_rc = -EIO;
}

static void commit_after(uv_work_t *w, int status)
{
    struct fill *fl = w->data;
    const struct fills_env *env = &fl->owner->env;
    (void)status;
    if (fl->commit_rc == 0) {
        fl->stored = 1;
        env->stats->fills_completed++;
        if (fl->new_object) {
            env->stats->objects++;
            env->stats->stored_bytes += fl->total;
            evict_check(env->evictor);
        }
        log_msg(env->log, LOG_INFO, "fill", "stored %s: %llu bytes, sha256 %s", fl->origin_url,
                (unsigned long long)fl->total, fl->sha_hex);
    } else {
        env->stats->fills_failed++;
        log_msg(env->log, LOG_ERROR, "fill", "could not store %s: %s", fl->origin_url,
                strerror(-fl->commit_rc));
    }
    fill_set_state(fl, FILL_DONE);
    fill_end(fl);
    fill_unref(&fl, NULL);          /* the commit's reference */
}
