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
#include "cache/index.h"
#include "cache/stats.h"
#include "cache/store.h"
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
    uint64_t received;
    struct digest sha;
    char sha_hex[DIGEST_SHA256_HEX];

    long status;
    int has_total;
    uint64_t total;
    char *content_type;
    char *origin_etag;
    int64_t last_modified;
    int passing;                    /* non-2xx: collecting the body to pass on */
    char *pass_body;
    size_t pass_len;
    int stored;
    int error_status;
    char error[512];
    char curl_error[CURL_ERROR_SIZE];

    struct fill_waiter *waiters;    /* readers waiting for bytes or a state change */

    struct upstream_xfer xfer;
    struct curl_slist *req_headers;
    uv_timer_t stall;               /* no byte for stall_timeout: fail */
    uv_work_t work;                 /* the commit on the thread pool */
    int commit_rc;
    int new_object;
};

struct fills {
    struct fills_env env;
    struct fill *buckets[FILLS_BUCKETS];
    unsigned live;                  /* fills not yet freed */
    int closing;
};

static void fill_set_state(struct fill *fl, enum fill_state st);
static void fill_fail(struct fill *fl, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fill_wake_all(struct fill *fl);
static void table_remove(struct fill *fl);
static void fill_release(struct fill *fl);
static size_t on_header(char *buf, size_t size, size_t n, void *arg);
static size_t on_body(char *buf, size_t size, size_t n, void *arg);
static void on_done(struct upstream_xfer *x, CURLcode result);
static void on_stall(uv_timer_t *t);
static void commit_work(uv_work_t *w);
static void commit_after(uv_work_t *w, int status);

static const char *const state_names[] = {
    [FILL_CONNECTING] = "connecting", [FILL_STREAMING] = "streaming",
    [FILL_PASS] = "pass",             [FILL_COMMITTING] = "committing",
    [FILL_DONE] = "done",             [FILL_FAILED] = "failed",
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
    *out = f;
    return 0;
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
    fl->owner->env.stats->fills_in_flight--;
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
            if (fl->state == FILL_COMMITTING) {
                /* the commit finishes on the pool and drops its reference */
                table_remove(fl);
                continue;
            }
            fill_fail(fl, 502, "edgecache is shutting down");
        }
    if (f->live == 0)
        free(f);
}

/* ---- start -------------------------------------------------------------- */

static int setup_easy(struct fill *fl)
{
    const struct cfg *cfg = fl->owner->env.cfg;
    CURL *e = curl_easy_init();
    if (!e)
        return -1;
    fl->xfer.easy = e;
    fl->xfer.done = on_done;
    fl->req_headers = curl_slist_append(NULL, "Accept-Encoding: identity");
    curl_easy_setopt(e, CURLOPT_URL, fl->origin_url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, fl->req_headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "edgecache/" EDGECACHE_VERSION);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)UPSTREAM_BUFFER);
    curl_easy_setopt(e, CURLOPT_FILETIME, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, fl->curl_error);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, fl);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, fl);
    return 0;
}

struct fill *fills_start(struct fills *f, const char *key, const char *origin_url,
                         char *reason, size_t reasonlen)
{
    struct fill *fl = calloc(1, sizeof *fl);
    if (!fl || !(fl->key = strdup(key)) || !(fl->origin_url = strdup(origin_url))) {
        snprintf(reason, reasonlen, "out of memory");
        goto fail;
    }
    fl->magic = FILL_MAGIC;
    fl->owner = f;
    fl->fd = store_temp_create(f->env.store, fl->tmp_path, sizeof fl->tmp_path);
    if (fl->fd < 0) {
        snprintf(reason, reasonlen, "cannot create a temp file in %s: %s",
                 f->env.store->tmp_dir, strerror(errno));
        goto fail;
    }
    if (digest_init(&fl->sha) != 0 || setup_easy(fl) != 0) {
        snprintf(reason, reasonlen, "cannot set up the upstream transfer");
        goto fail;
    }
    uv_timer_init(f->env.loop, &fl->stall);
    fl->stall.data = fl;
    f->live++;
    if (upstream_start(f->env.upstream, &fl->xfer) != 0) {
        snprintf(reason, reasonlen, "cannot start the upstream transfer");
        fl->refs = 1;
        fill_release(fl);
        return NULL;
    }
    uv_timer_start(&fl->stall, on_stall, f->env.cfg->stall_timeout_ms, 0);
    unsigned b = key_hash(key);
    fl->hnext = f->buckets[b];
    f->buckets[b] = fl;
    fl->in_table = 1;
    fl->refs = 2;                   /* the table's and the caller's */
    f->env.stats->fills_started++;
    f->env.stats->fills_in_flight++;
    f->env.stats->upstream_requests++;
    log_msg(f->env.log, LOG_INFO, "fill", "start %s", origin_url);
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

static void fill_wake_all(struct fill *fl)
{
    while (fl->waiters) {
        struct fill_waiter *w = fl->waiters;
        fill_unwait(fl, w);
        w->wake(w);
    }
}

static void fill_closed(uv_handle_t *h)
{
    struct fill *fl = h->data;
    struct fills *owner = fl->owner;
    free(fl);
    if (--owner->live == 0 && owner->closing)
        free(owner);
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
    fl->magic = 0;
    uv_timer_stop(&fl->stall);
    uv_close((uv_handle_t *)&fl->stall, fill_closed);
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
        .sha256_hex = fl->state == FILL_DONE ? fl->sha_hex : NULL,
        .stored = fl->stored,
        /* every reference but the table's and a running commit's is a reader */
        .readers = fl->refs - (unsigned)fl->in_table - (fl->state == FILL_COMMITTING),
    };
}

uint64_t fill_readable(const struct fill *fl)
{
    switch (fl->state) {
    case FILL_STREAMING:
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
    uv_timer_stop(&fl->stall);
    upstream_cancel(fl->owner->env.upstream, &fl->xfer);
    fill_set_state(fl, FILL_FAILED);
    fl->owner->env.stats->fills_failed++;
    log_msg(fl->owner->env.log, LOG_WARN, "fill", "failed %s after %llu bytes: %s",
            fl->origin_url, (unsigned long long)fl->received, fl->error);
    struct fill *keep = fl;
    fill_ref(keep);                 /* waking may drop the readers' references */
    table_remove(fl);
    fill_wake_all(fl);
    fill_unref(&keep, NULL);
}

static void stall_rearm(struct fill *fl)
{
    uv_timer_start(&fl->stall, on_stall, fl->owner->env.cfg->stall_timeout_ms, 0);
}

static void on_stall(uv_timer_t *t)
{
    struct fill *fl = t->data;
    fill_fail(fl, 504, "upstream %s sent nothing for %llu ms (config key: stall_timeout)",
              fl->origin_url, (unsigned long long)fl->owner->env.cfg->stall_timeout_ms);
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
    curl_easy_getinfo(e, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
    curl_easy_getinfo(e, CURLINFO_FILETIME_T, &filetime);
    curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ctype);
    free(fl->content_type);
    fl->content_type = ctype ? strdup(ctype) : NULL;
    fl->last_modified = filetime > 0 ? (int64_t)filetime : 0;
    if (fl->status != 200) {
        fl->passing = 1;
        return;
    }
    fl->has_total = len >= 0;
    fl->total = len >= 0 ? (uint64_t)len : 0;
    fill_set_state(fl, FILL_STREAMING);
    fill_wake_all(fl);
}

static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
    struct fill *fl = arg;
    size_t len = size * n;
    stall_rearm(fl);
    if (len >= 5 && strncasecmp(buf, "HTTP/", 5) == 0) {
        fl->passing = 0;            /* a new response (after 1xx) */
        free(fl->origin_etag);
        fl->origin_etag = NULL;
    } else if (len > 5 && strncasecmp(buf, "etag:", 5) == 0) {
        const char *v = buf + 5;
        size_t vl = len - 5;
        while (vl && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        free(fl->origin_etag);
        fl->origin_etag = strndup(v, vl);
    } else if ((len == 2 && buf[0] == '\r') || (len == 1 && buf[0] == '\n')) {
        headers_done(fl);
    }
    return len;
}

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

static size_t on_body(char *buf, size_t size, size_t n, void *arg)
{
    struct fill *fl = arg;
    size_t len = size * n;
    stall_rearm(fl);
    fl->owner->env.stats->upstream_bytes += len;
    if (fl->passing)
        return pass_append(fl, buf, len);
    if (fl->state != FILL_STREAMING)
        return 0;
    if (fl->has_total && fl->received + len > fl->total) {
        snprintf(fl->error, sizeof fl->error, "upstream sent more than its Content-Length %llu",
                 (unsigned long long)fl->total);
        return 0;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(fl->fd, buf + done, len - done, (off_t)(fl->received + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(fl->error, sizeof fl->error, "cannot write %.300s: %s", fl->tmp_path,
                     strerror(errno));
            return 0;
        }
        done += (size_t)w;
    }
    digest_update(&fl->sha, buf, len);
    fl->received += len;
    fill_wake_all(fl);
    return len;
}

/* ---- the end of the transfer ------------------------------------------------ */

static void end_pass(struct fill *fl)
{
    uv_timer_stop(&fl->stall);
    fill_set_state(fl, FILL_PASS);
    fl->owner->env.stats->fills_failed++;
    log_msg(fl->owner->env.log, LOG_INFO, "fill", "upstream %s answered %ld: passed on, not stored",
            fl->origin_url, fl->status);
    struct fill *keep = fl;
    fill_ref(keep);
    table_remove(fl);
    fill_wake_all(fl);
    fill_unref(&keep, NULL);
}

static void fail_curl(struct fill *fl, CURLcode result)
{
    const char *what = fl->curl_error[0] ? fl->curl_error : curl_easy_strerror(result);
    if (result == CURLE_WRITE_ERROR && fl->error[0]) {
        char own[sizeof fl->error];
        memcpy(own, fl->error, sizeof own);
        fill_fail(fl, 502, "%s", own);
    } else if (result == CURLE_OPERATION_TIMEDOUT) {
        fill_fail(fl, 504, "upstream %s timed out: %s (config key: connect_timeout)",
                  fl->origin_url, what);
    } else if (fl->state == FILL_STREAMING) {
        fill_fail(fl, 502, "upstream %s broke off after %llu bytes: %s", fl->origin_url,
                  (unsigned long long)fl->received, what);
    } else {
        fill_fail(fl, 502, "upstream %s unreachable: %s", fl->origin_url, what);
    }
}

static void on_done(struct upstream_xfer *x, CURLcode result)
{
    struct fill *fl = (struct fill *)((char *)x - offsetof(struct fill, xfer));
    uv_timer_stop(&fl->stall);
    if (fl->passing && (result == CURLE_OK || result == CURLE_WRITE_ERROR)) {
        end_pass(fl);
        return;
    }
    if (result != CURLE_OK) {
        fail_curl(fl, result);
        return;
    }
    if (fl->state != FILL_STREAMING) {
        fill_fail(fl, 502, "upstream %s ended without a response", fl->origin_url);
        return;
    }
    if (fl->has_total && fl->received != fl->total) {
        fill_fail(fl, 502, "upstream %s sent %llu of %llu bytes", fl->origin_url,
                  (unsigned long long)fl->received, (unsigned long long)fl->total);
        return;
    }
    if (!fl->has_total) {
        fl->has_total = 1;
        fl->total = fl->received;
    }
    unsigned char bin[DIGEST_SHA256_LEN];
    digest_final(&fl->sha, bin);
    digest_hex(bin, sizeof bin, fl->sha_hex);
    fill_set_state(fl, FILL_COMMITTING);
    fl->work.data = fl;
    fill_ref(fl);                   /* the commit's reference */
    if (uv_queue_work(fl->owner->env.loop, &fl->work, commit_work, commit_after) != 0) {
        fl->commit_rc = -EAGAIN;
        commit_after(&fl->work, 0);
    }
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
        .verified_by = "content-length",
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
        }
        log_msg(env->log, LOG_INFO, "fill", "stored %s: %llu bytes, sha256 %s", fl->origin_url,
                (unsigned long long)fl->total, fl->sha_hex);
    } else {
        env->stats->fills_failed++;
        log_msg(env->log, LOG_ERROR, "fill", "could not store %s: %s", fl->origin_url,
                strerror(-fl->commit_rc));
    }
    fill_set_state(fl, FILL_DONE);
    table_remove(fl);
    fill_wake_all(fl);
    fill_unref(&fl, NULL);          /* the commit's reference */
}
