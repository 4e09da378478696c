/*
 * fill — one upstream transfer, shared by the requests that can use it. The
 * data model and its invariants are in fill.h. This file keeps the table,
 * the references and the readers, the states and the commit; fill_http.c
 * holds the exchange with the upstream.
 */
#include "cache/fill.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache/catalog.h"
#include "cache/evict.h"
#include "cache/fill_int.h"
#include "cache/index.h"
#include "cache/stats.h"
#include "cache/store.h"

/* What is known of one upstream (an origin, or the parent): whether it
 * answers. After a failure to resolve, connect or answer in time it is
 * down: new fills for it fail at once, but for one probe every backoff
 * interval (1 s doubling to 30 s), so clients get a prompt 502 and the
 * upstream is not hammered. Any HTTP answer brings it back up. */
struct health {
    char target[300];               /* scheme://host:port, the port always written */
    int down;
    int64_t last_ok, last_fail;     /* Unix seconds, 0 never */
    int64_t down_since;             /* Unix seconds, while down */
    unsigned failures;              /* in a row */
    uint64_t next_probe;            /* uv_now() ms: when the next fill may try */
    char last_error[200];
    struct health *next;
};

struct fills {
    struct fills_env env;
    struct fill *buckets[FILLS_BUCKETS];
    struct fill *all;               /* every fill not yet freed */
    unsigned live;
    int closing;
    struct health *health;          /* every upstream asked so far */
    /* Wakes for new bytes are gathered and delivered once per loop turn:
     * curl hands a socket read over in 16 KiB pieces, and waking readers
     * for each would make each client send as small. */
    uv_check_t wake_check;
    struct fill *wake_list;
    int check_closed;
};

#define HEALTH_BACKOFF_MIN_MS 1000u
#define HEALTH_BACKOFF_MAX_MS 30000u

static void table_remove(struct fill *fl);
static void fill_release(struct fill *fl);
static void commit_work(uv_work_t *w);
static void commit_after(uv_work_t *w, int status);

static const char *const state_names[] = {
    [FILL_CONNECTING] = "connecting", [FILL_STREAMING] = "streaming",
    [FILL_COMMITTING] = "committing", [FILL_DONE] = "done",
    [FILL_FAILED] = "failed",         [FILL_REVALIDATED] = "revalidated",
};

const char *fill_state_name(enum fill_state s)
{
    return state_names[s];
}

int64_t fill__now(void)
{
    return (int64_t)time(NULL);
}

const struct fills_env *fill__env(const struct fill *fl)
{
    return &fl->owner->env;
}

/* ---- the table ---------------------------------------------------------- */

static unsigned name_hash(const char *s)
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
        fill__wake_all(fl);
        fill_unref(&fl, NULL);
    }
}

void fill__wake_soon(struct fill *fl)
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

struct fill *fills_find(struct fills *f, const char *name)
{
    for (struct fill *fl = f->buckets[name_hash(name)]; fl; fl = fl->hnext)
        if (strcmp(fl->name, name) == 0)
            return fl;
    return NULL;
}

static void table_remove(struct fill *fl)
{
    if (!fl->in_table)
        return;
    struct fill **pp = &fl->owner->buckets[name_hash(fl->name)];
    while (*pp != fl)
        pp = &(*pp)->hnext;
    *pp = fl->hnext;
    fl->hnext = NULL;
    fl->in_table = 0;
    struct fill *self = fl;
    fill_unref(&self, NULL);        /* the table's reference */
}

void fill_detach(struct fill *fl)
{
    if (fl->in_table)
        log_msg(fl->owner->env.log, LOG_DEBUG, "fill", "%s: leaves the table (%s): it serves "
                "only its readers", fl->origin_url, state_names[fl->state]);
    table_remove(fl);
}

void fills_foreach(struct fills *f, void (*cb)(void *, const struct fill_info *), void *ctx)
{
    for (struct fill *fl = f->all; fl; fl = fl->all_next) {
        if (fl->state == FILL_DONE || fl->state == FILL_FAILED || fl->state == FILL_REVALIDATED)
            continue;               /* ended: only readers left */
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
    /* Each fill is held while it is ended: ending one wakes readers, which
     * may drop references to others. */
    size_t n = 0;
    for (struct fill *fl = f->all; fl; fl = fl->all_next)
        n++;
    struct fill **all = calloc(n ? n : 1, sizeof *all);
    n = 0;
    for (struct fill *fl = f->all; all && fl; fl = fl->all_next) {
        fill_ref(fl);
        all[n++] = fl;
    }
    for (size_t i = 0; i < n; i++) {
        struct fill *fl = all[i];
        upstream_cancel(f->env.upstream, &fl->xfer);
        if (fl->state == FILL_CONNECTING || fl->state == FILL_STREAMING) {
            fill__fail(fl, 502, "edgecache is shutting down");
        } else {                    /* a commit finishes on its own; wake its readers now */
            table_remove(fl);
            fill__wake_all(fl);
        }
    }
    for (size_t i = 0; i < n; i++)
        fill_unref(&all[i], NULL);
    free(all);
    while (f->health) {
        struct health *h = f->health;
        f->health = h->next;
        free(h);
    }
    deliver_wakes(&f->wake_check);
    uv_close((uv_handle_t *)&f->wake_check, check_closed_cb);
}

/* ---- upstream health -------------------------------------------------------- */

struct health *fill__health_of(struct fills *f, const char *url)
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

int fill__health_usable(struct fills *f, const char *url)
{
    struct health *h = fill__health_of(f, url);
    return !h || !h->down || uv_now(f->env.loop) >= h->next_probe;
}

int fills_upstream_usable(struct fills *f, const char *url)
{
    return fill__health_usable(f, url);
}

void fill__health_ok(struct fill *fl)
{
    struct health *h = fl->health;
    if (!h)
        return;
    if (h->down)
        log_msg(fl->owner->env.log, LOG_INFO, "upstream", "%s answers again", h->target);
    h->down = 0;
    h->failures = 0;
    h->last_ok = fill__now();
}

void fill__health_failed(struct fill *fl, const char *why)
{
    struct health *h = fl->health;
    if (!h)
        return;
    unsigned shift = h->failures < 5 ? h->failures : 5;
    uint64_t backoff = HEALTH_BACKOFF_MIN_MS << shift;
    if (!h->down) {
        log_msg(fl->owner->env.log, LOG_WARN, "upstream", "%s is down: %s", h->target, why);
        h->down_since = fill__now();
    }
    h->failures++;
    h->down = 1;
    h->last_fail = fill__now();
    snprintf(h->last_error, sizeof h->last_error, "%s", why);
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
    snprintf(reason, reasonlen, "upstream %s is unreachable (%s; last success %s%lld s ago); "
             "the next attempt is in %llu ms", h->target, h->last_error,
             h->last_ok ? "" : "never: ",
             h->last_ok ? (long long)(fill__now() - h->last_ok) : 0LL,
             (unsigned long long)(h->next_probe - now));
    return -1;
}

void fills_foreach_upstream(struct fills *f, void (*cb)(void *, const struct fills_upstream *),
                            void *ctx)
{
    for (struct health *h = f->health; h; h = h->next) {
        struct fills_upstream u = {h->target, !h->down, h->last_ok, h->last_fail, h->failures,
                                   h->down ? h->last_error : "", h->down ? h->down_since : 0};
        cb(ctx, &u);
    }
}

/* ---- start -------------------------------------------------------------- */

static void fill_free_parts(struct fill *fl)
{
    if (fl->xfer.easy) {
        upstream_cancel(fl->owner->env.upstream, &fl->xfer);
        curl_easy_cleanup(fl->xfer.easy);
        fl->xfer.easy = NULL;
    }
    fill__release_http(fl);
    digest_free(&fl->sha);
    digest_free(&fl->md5);
    cat_resp_unref(&fl->stale);
    cat_resp_unref(&fl->fresh_resp);
    free(fl->key);
    free(fl->name);
    free(fl->origin_url);
    free(fl->row_block);
}

struct fill *fills_start(struct fills *f, const struct fill_request *rq, int *status,
                         char *reason, size_t reasonlen)
{
    *status = 503;
    struct fill *fl = calloc(1, sizeof *fl);
    if (!fl)
        goto oom;
    fl->magic = FILL_MAGIC;
    fl->owner = f;
    fl->fd = -1;
    fl->exp_size = -1;
    fl->xfer.easy = NULL;
    hdrs_init(&fl->req);
    hdrs_init(&fl->hop);
    hdrs_init(&fl->resp);
    if (!(fl->key = strdup(rq->key)) || !(fl->origin_url = strdup(rq->origin_url))
        || (rq->name && !(fl->name = strdup(rq->name))))
        goto oom;
    if (rq->stale && (rq->stale->etag || rq->stale->last_modified > 0)) {
        fl->revalidating = 1;
        cat_resp_ref(rq->stale);
        fl->stale = rq->stale;
    }
    if (rq->expect && digest_from_hex(rq->expect->sha256, fl->exp_sha, sizeof fl->exp_sha) == 0) {
        fl->exp_sha_set = 1;
        fl->exp_size = rq->expect->size;
        digest_hex(fl->exp_sha, sizeof fl->exp_sha, fl->sha_hex);  /* replaced by the real one */
    }
    fl->fd = store_temp_create(f->env.store, fl->tmp_path, sizeof fl->tmp_path);
    if (fl->fd < 0 && (errno == EMFILE || errno == ENFILE))
        f->env.stats->resource_errors++;
    if (fl->fd < 0) {
        snprintf(reason, reasonlen, "cannot create a temp file in %s: %s",
                 f->env.store->tmp_dir, strerror(errno));
        goto fail;
    }
    fl->keep = rq->keep;
    if (digest_init(&fl->sha) != 0 || fill__setup(fl, rq->req, reason, reasonlen) != 0)
        goto fail;
    if (health_admit(f, fl->health, reason, reasonlen) != 0) {
        *status = 502;
        goto fail;
    }
    uv_timer_init(f->env.loop, &fl->timer);
    fl->timer.data = fl;
    f->live++;
    fl->all_next = f->all;
    if (f->all)
        f->all->all_prev = fl;
    f->all = fl;
    fl->refs = 1;
    fl->request_time = fill__now();
    if (upstream_start(f->env.upstream, &fl->xfer) != 0) {
        snprintf(reason, reasonlen, "cannot start the upstream transfer");
        fill_release(fl);
        return NULL;
    }
    uv_timer_start(&fl->timer, fill__on_stall, f->env.cfg->stall_timeout_ms, 0);
    if (fl->name) {
        unsigned b = name_hash(fl->name);
        fl->hnext = f->buckets[b];
        f->buckets[b] = fl;
        fl->in_table = 1;
        fl->refs++;                 /* the table's */
    }
    f->env.stats->fills_started++;
    f->env.stats->fills_in_flight++;
    f->env.stats->upstream_requests++;
    fl->in_flight = 1;
    fl->started_ms = uv_now(f->env.loop);
    log_msg(f->env.log, LOG_INFO, "fill", "start %s%s%s%s", fl->origin_url,
            fl->from_parent ? " via the parent as " : "", fl->from_parent ? fl->fetch_url : "",
            fl->name ? "" : " (for one request)");
    return fl;
oom:
    snprintf(reason, reasonlen, "out of memory");
fail:
    if (fl) {
        if (fl->fd >= 0) {
            close(fl->fd);
            unlink(fl->tmp_path);
        }
        fill_free_parts(fl);
        free(fl);
    }
    return NULL;
}

/* ---- references and waiters ---------------------------------------------- */

void fill_ref(struct fill *fl)
{
    fl->refs++;
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
void fill__wake_all(struct fill *fl)
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
    struct fills *f = fl->owner;
    if (fl->fd >= 0)
        close(fl->fd);
    fl->fd = -1;
    if (!fl->renamed)
        discard_temp(fl);
    if (fl->all_prev)
        fl->all_prev->all_next = fl->all_next;
    else if (f->all == fl)
        f->all = fl->all_next;
    if (fl->all_next)
        fl->all_next->all_prev = fl->all_prev;
    fill_free_parts(fl);
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
        .status = fl->answered ? fl->status : 0,
        .hdrs = fl->answered ? &fl->resp : NULL,
        .has_total = fl->has_total,
        .total = fl->total,
        .received = fl->received,
        .last_modified = fl->last_modified,
        .etag = fl->answered ? hdrs_get(&fl->resp, "ETag") : NULL,
        .storable = fl->storable,
        .personal = fl->fresh.personal,
        .drop_fields = fl->fresh.drop_fields,
        .initial_age = fl->fresh.initial_age,
        .error_status = fl->error_status,
        .error = fl->error,
        .sha256_hex = fl->state == FILL_DONE ? fl->sha_hex : fl->exp_sha_set ? fl->sha_hex : NULL,
        .stored = fl->stored,
        .attempts = fl->attempts,
        .revalidating = fl->revalidating
                        && (fl->state == FILL_CONNECTING || fl->state == FILL_REVALIDATED),
        .stale = fl->stale,
        .fresh = fl->fresh_resp,
        .upstream_cache_status = fl->upstream_cs,
        .redirects = (const char *const *)fl->redirects,
        .n_redirects = fl->n_redirects,
        /* every reference but the table's, a running commit's and the wake list's
         * is a reader */
        .readers = fl->refs - (unsigned)fl->in_table - (fl->state == FILL_COMMITTING)
                   - (unsigned)fl->wake_queued,
    };
}

uint64_t fill_readable(const struct fill *fl)
{
    switch (fl->state) {
    case FILL_STREAMING:
        /* the last byte waits for the verdict when there is one to wait for */
        return fill__expects_digest(fl) && fl->received ? fl->received - 1 : fl->received;
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
/* Each fill is counted once, when it ends: started = completed + failed +
 * abandoned + revalidated (not modified) + in flight. */
static void count_end(struct fill *fl)
{
    struct stats *st = fl->owner->env.stats;
    if (!fl->in_flight)
        return;
    fl->in_flight = 0;
    st->fills_in_flight--;
    if (fl->state == FILL_FAILED && fl->owner->closing)
        st->fills_abandoned++;
    else if (fl->state == FILL_FAILED || (fl->state == FILL_DONE && fl->commit_rc != 0))
        st->fills_failed++;
    else if (fl->state == FILL_DONE) {
        st->fills_completed++;
        stats_observe(&st->fill_duration,
                      (double)(uv_now(fl->owner->env.loop) - fl->started_ms) / 1000.0);
    }
}

void fill__end(struct fill *fl)
{
    struct fill *keep = fl;
    fill_ref(keep);                 /* waking may drop the readers' references */
    count_end(fl);
    table_remove(fl);
    fill__wake_all(fl);
    fill_unref(&keep, NULL);
}

void fill__set_state(struct fill *fl, enum fill_state st)
{
    log_msg(fl->owner->env.log, LOG_DEBUG, "fill", "%s: %s -> %s", fl->origin_url,
            state_names[fl->state], state_names[st]);
    fl->state = st;
}

void fill__fail(struct fill *fl, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fl->error, sizeof fl->error, fmt, ap);
    va_end(ap);
    fl->error_status = status;
    uv_timer_stop(&fl->timer);
    upstream_cancel(fl->owner->env.upstream, &fl->xfer);
    fill__set_state(fl, FILL_FAILED);
    log_msg(fl->owner->env.log, LOG_WARN, "fill", "failed %s after %llu bytes: %s",
            fl->origin_url, (unsigned long long)fl->received, fl->error);
    fill__end(fl);
}

/* ---- the commit -------------------------------------------------------------- */

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

/* The row the commit writes, and the catalog lists once it is written. */
static void commit_row(const struct fill *fl, struct index_response *r)
{
    *r = (struct index_response){
        .key = fl->key,
        .variant = fl->variant ? fl->variant : "",
        .origin_url = fl->origin_url,
        .sha256 = fl->sha_hex,
        .size = fl->total,
        .status = fl->status,
        .vary = fl->vary,
        .headers = fl->row_block ? fl->row_block : "",
        .stored_at = fl->response_time,
        .initial_age = fl->fresh.initial_age,
        .fresh_until = fl->fresh.fresh_until,
        .stale_if_error = fl->fresh.stale_if_error,
        .flags = (fl->fresh.no_stale ? CAT_NO_STALE : 0)
                 | (fl->fresh.always_revalidate ? CAT_ALWAYS_REVALIDATE : 0),
    };
}

/* What is stored of the answer's fields: all its end-to-end fields but
 * those meant for the request that fetched it alone (Set-Cookie, the
 * fields no-cache="..." or private="..." name). */
static char *stored_block(const struct fill *fl)
{
    struct hdrs keep;
    if (hdrs_copy(&keep, &fl->resp) != 0)
        return NULL;
    hdrs_remove(&keep, "Set-Cookie");
    hdrs_remove(&keep, "Set-Cookie2");
    char names[sizeof fl->fresh.drop_fields];
    snprintf(names, sizeof names, "%s", fl->fresh.drop_fields);
    for (char *p = strtok(names, ","); p; p = strtok(NULL, ","))
        hdrs_remove(&keep, p);
    char *block = hdrs_serialize(&keep, NULL);
    hdrs_free(&keep);
    return block;
}

void fill__commit(struct fill *fl)
{
    fill__set_state(fl, FILL_COMMITTING);
    fl->row_block = stored_block(fl);
    fl->work.data = fl;
    fill_ref(fl);                   /* the commit's reference */
    if (!fl->row_block) {
        fl->commit_rc = -ENOMEM;
        commit_after(&fl->work, 0);
        return;
    }
    if (uv_queue_work(fl->owner->env.loop, &fl->work, commit_work, commit_after) != 0) {
        fl->commit_rc = -EAGAIN;
        commit_after(&fl->work, 0);
    }
}

/* The index row, written under the store's lock right after the blob
 * appears (see store_commit_recorded). */
static int record_row(void *ctx)
{
    struct fill *fl = ctx;
    struct index_response r;
    commit_row(fl, &r);
    return index_commit_response(fl->owner->env.index, &r, fill__now(), verified_by(fl),
                                 &fl->new_object);
}

/* Thread pool: fsync, rename, index row. Touches only what no loop-thread
 * code changes while the fill is COMMITTING. */
static void commit_work(uv_work_t *w)
{
    struct fill *fl = w->data;
    const struct fills_env *env = &fl->owner->env;
    fl->commit_rc = store_commit_recorded(env->store, fl->fd, fl->tmp_path, fl->sha_hex,
                                          record_row, fl, &fl->commit_seq);
    if (fl->commit_rc == 0 || access(fl->tmp_path, F_OK) != 0)
        fl->renamed = 1;            /* the temp file is a blob now (or gone) */
}

static void commit_after(uv_work_t *w, int status)
{
    struct fill *fl = w->data;
    const struct fills_env *env = &fl->owner->env;
    (void)status;
    if (fl->commit_rc == 0) {
        struct index_response r;
        commit_row(fl, &r);
        fl->stored = 1;
        if (env->catalog)
            catalog_put(env->catalog, &r, fl->commit_seq);
        if (fl->new_object)
            evict_check(env->evictor);
        log_msg(env->log, LOG_INFO, "fill", "stored %s: status %ld, %llu bytes, sha256 %s",
                fl->origin_url, fl->status, (unsigned long long)fl->total, fl->sha_hex);
    } else {
        log_msg(env->log, LOG_ERROR, "fill", "could not store %s: %s", fl->origin_url,
                strerror(-fl->commit_rc));
        if (fl->commit_rc == -ENOSPC || fl->commit_rc == -EDQUOT || fl->commit_rc == -EIO)
            evict_pressure(env->evictor, fl->total);
    }
    fill__set_state(fl, FILL_DONE);
    fill__end(fl);
    fill_unref(&fl, NULL);          /* the commit's reference */
}
