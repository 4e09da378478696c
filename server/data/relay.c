/* relay — see relay.h. */
#include "server/data/relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache/catalog.h"
#include "cache/hdrs.h"
#include "cache/route.h"
#include "cache/upstream.h"
#include "version.h"

#define RELAY_BUF (256 * 1024)      /* each way */
#define RELAY_MAGIC 0x52656c61u

struct relay {
    struct upstream_xfer xfer;      /* first: the completion finds the relay */
    unsigned magic;
    struct edge *e;
    struct worker *w;               /* the worker whose connection it answers */
    struct MHD_Connection *conn;    /* NULL once the request is complete */
    int refs;
    int suspended;                  /* we suspended conn */
    char *key;
    char *origin_url;
    int unsafe;
    struct curl_slist *req_headers;
    struct relay *next, *prev;      /* the edge's relays */

    char *up;                       /* client -> upstream */
    size_t up_len;
    int up_done;                    /* the client sent its whole body */
    int uploads;                    /* the method carries a body upstream */
    int read_paused;

    long status;                    /* upstream -> client */
    struct hdrs resp_headers;       /* the answer's end-to-end fields, passed on */
    int headers_done;
    curl_off_t length;              /* -1 unknown */
    char *down;
    size_t down_off, down_len;
    int write_paused;
    int ended;                      /* the transfer ended */
    CURLcode result;
    int transfer_ref;               /* the transfer still holds its reference */
    char error[CURL_ERROR_SIZE];
};

static void relay_unref(struct relay *r)
{
    if (--r->refs > 0)
        return;
    if (r->prev)
        r->prev->next = r->next;
    else
        r->e->relays = r->next;
    if (r->next)
        r->next->prev = r->prev;
    curl_easy_cleanup(r->xfer.easy);
    curl_slist_free_all(r->req_headers);
    hdrs_free(&r->resp_headers);
    free(r->key);
    free(r->origin_url);
    free(r->up);
    free(r->down);
    r->magic = 0;
    free(r);
}

/* Once the daemon is stopping nothing would resume the connection, so it
 * is not suspended (the transfers are cancelled and answers end). */
static void suspend(struct relay *r)
{
    if (!r->suspended && r->conn && !r->e->stopping) {
        r->suspended = 1;
        worker_suspend(r->w, r->conn);
    }
}

static void wake(struct relay *r)
{
    if (r->suspended && r->conn) {
        r->suspended = 0;
        worker_resume(r->w, r->conn);
    }
}

/* ---- curl's side --------------------------------------------------------------- */

static size_t on_read(char *buf, size_t size, size_t n, void *arg)
{
    struct relay *r = arg;
    size_t want = size * n;
    if (r->up_len == 0) {
        if (r->up_done)
            return 0;
        r->read_paused = 1;
        wake(r);                    /* room for the client's next bytes */
        return CURL_READFUNC_PAUSE;
    }
    size_t k = r->up_len < want ? r->up_len : want;
    memcpy(buf, r->up, k);
    memmove(r->up, r->up + k, r->up_len - k);
    r->up_len -= k;
    wake(r);
    return k;
}

static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
    struct relay *r = arg;
    size_t len = size * n;
    if (len >= 5 && strncasecmp(buf, "HTTP/", 5) == 0) {
        hdrs_clear(&r->resp_headers);
    } else if ((len == 2 && buf[0] == '\r') || (len == 1 && buf[0] == '\n')) {
        curl_easy_getinfo(r->xfer.easy, CURLINFO_RESPONSE_CODE, &r->status);
        if (r->status >= 200) {
            curl_easy_getinfo(r->xfer.easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &r->length);
            hdrs_strip_hop_by_hop(&r->resp_headers);
            r->headers_done = 1;
            wake(r);
        }
    } else if (hdrs_add_line(&r->resp_headers, buf, len) != 0) {
        return 0;                   /* over HDRS_MAX_BYTES: the transfer fails */
    }
    return len;
}

static size_t on_write(char *buf, size_t size, size_t n, void *arg)
{
    struct relay *r = arg;
    size_t len = size * n;
    if (r->down_off && r->down_off == r->down_len)
        r->down_off = r->down_len = 0;
    if (r->down_len + len > RELAY_BUF) {
        if (r->down_off) {          /* make room at the front first */
            memmove(r->down, r->down + r->down_off, r->down_len - r->down_off);
            r->down_len -= r->down_off;
            r->down_off = 0;
        }
        if (r->down_len + len > RELAY_BUF) {
            r->write_paused = 1;
            wake(r);
            return CURL_WRITEFUNC_PAUSE;
        }
    }
    memcpy(r->down + r->down_len, buf, len);
    r->down_len += len;
    wake(r);
    return len;
}

/* The key of url (absolute, or relative to the relayed URL) when it is
 * on the same origin as the relayed URL; else NULL (RFC 9111 §4.4: a
 * cache must not invalidate another origin's URIs). */
static char *same_origin_key(const struct relay *r, const char *url)
{
    char *abs = NULL, *key = NULL;
    CURLU *u = curl_url();
    if (u && curl_url_set(u, CURLUPART_URL, r->origin_url, 0) == CURLUE_OK
        && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK
        && curl_url_get(u, CURLUPART_URL, &abs, 0) == CURLUE_OK)
        key = route_key_for_url(abs);
    curl_free(abs);
    curl_url_cleanup(u);
    size_t n = strcspn(r->key + strcspn(r->key, ":") + 3, "/?") + strcspn(r->key, ":") + 3;
    if (key && (strncmp(key, r->key, n) != 0 || (key[n] != '/' && key[n] != '?'
                                                 && key[n] != '\0'))) {
        free(key);
        key = NULL;
    }
    return key;
}

/* RFC 9111 §4.4: a successful unsafe method invalidates the target URI,
 * and the URIs in Location and Content-Location on the same origin. */
static void invalidate(struct relay *r)
{
    const char *fields[] = {"Location", "Content-Location"};
    catalog_drop_key(r->e->catalog, r->key);
    r->e->stats.invalidations++;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const char *v = hdrs_get(&r->resp_headers, fields[i]);
        char *key = v ? same_origin_key(r, v) : NULL;
        if (key && strcmp(key, r->key) != 0) {
            catalog_drop_key(r->e->catalog, key);
            r->e->stats.invalidations++;
        }
        free(key);
    }
}

static void on_done(struct upstream_xfer *x, CURLcode result)
{
    struct relay *r = (struct relay *)x;
    r->ended = 1;
    r->result = result;
    if (result == CURLE_OK && r->unsafe && r->status >= 200 && r->status < 400)
        invalidate(r);
    log_msg(&r->e->log, result == CURLE_OK ? LOG_INFO : LOG_WARN, "relay", "%s: %s", r->key,
            result == CURLE_OK ? "relayed" : (r->error[0] ? r->error : curl_easy_strerror(result)));
    wake(r);
    r->transfer_ref = 0;
    relay_unref(r);
}

/* ---- the client's side ----------------------------------------------------------- */

static ssize_t answer_read_locked(struct relay *r, size_t max, char *buf)
{
    if (r->down_off < r->down_len) {
        size_t k = r->down_len - r->down_off < max ? r->down_len - r->down_off : max;
        memcpy(buf, r->down + r->down_off, k);
        r->down_off += k;
        if (r->write_paused && !r->ended) {
            r->write_paused = 0;
            curl_easy_pause(r->xfer.easy, CURLPAUSE_CONT);
        }
        return (ssize_t)k;
    }
    if (r->ended)
        return r->result == CURLE_OK ? MHD_CONTENT_READER_END_OF_STREAM
                                     : MHD_CONTENT_READER_END_WITH_ERROR;
    suspend(r);
    return 0;
}

/* MHD's callbacks on the worker's thread take the edge's lock; the
 * transfer is the main loop's. */
static ssize_t answer_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct relay *r = cls;
    struct edge *e = r->e;
    (void)pos;
    edge_lock(e);
    worker_wake_main();
    ssize_t n = answer_read_locked(r, max, buf);
    edge_unlock(e);
    return n;
}

static void answer_free(void *cls)
{
    struct relay *r = cls;
    struct edge *e = r->e;
    edge_lock(e);
    worker_wake_main();
    relay_unref(r);
    edge_unlock(e);
}

/* The upstream never answered: 502 (504 on a timeout) with one line of
 * text. The URL is cut to fit, so the body never reaches past its buffer. */
static enum MHD_Result answer_unreachable(struct relay *r)
{
    char text[600];
    int n = snprintf(text, sizeof text, "upstream for %.300s unreachable: %.200s\n", r->key,
                     r->error[0] ? r->error : curl_easy_strerror(r->result));
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof text) {
        n = (int)sizeof text - 1;
        text[n - 1] = '\n';
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer((size_t)n, text, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    unsigned st = r->result == CURLE_OPERATION_TIMEDOUT ? 504 : 502;
    r->e->stats.req_error++;
    enum MHD_Result ret = MHD_queue_response(r->conn, st, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result answer(struct relay *r)
{
    if (!r->headers_done)
        return answer_unreachable(r);
    struct MHD_Response *resp = MHD_create_response_from_callback(
        r->length >= 0 ? (uint64_t)r->length : MHD_SIZE_UNKNOWN, 64 * 1024, answer_read, r,
        answer_free);
    if (!resp)
        return MHD_NO;
    r->refs++;                      /* the answer's reference */
    char via[600] = "";
    for (unsigned i = 0; i < r->resp_headers.n; i++) {
        const char *name = hdrs_name(&r->resp_headers, i);
        const char *value = hdrs_value(&r->resp_headers, i);
        if (strcasecmp(name, "Via") == 0) {
            size_t n = strlen(via);
            snprintf(via + n, sizeof via - n, "%s%s", n ? ", " : "", value);
        } else if (strcasecmp(name, "Content-Length") != 0 && strcasecmp(name, "Date") != 0) {
            MHD_add_response_header(resp, name, value);
        }
    }
    char line[700];
    snprintf(line, sizeof line, "%s%s1.1 %s (edgecache/%s)", via, via[0] ? ", " : "",
             r->e->cfg->node_id, EDGECACHE_VERSION);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_VIA, line);
    MHD_add_response_header(resp, "Cache-Status", "edgecache; fwd=request; detail=relayed");
    r->e->stats.relayed++;
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result relay_continue(struct relay *r, const char *upload, size_t *upload_size)
{
    worker_wake_main();             /* curl's pauses are the main loop's */
    if (*upload_size && !r->uploads) {
        *upload_size = 0;           /* a body this method does not carry upstream */
        return MHD_YES;
    }
    if (*upload_size) {
        size_t room = RELAY_BUF - r->up_len;
        size_t k = *upload_size < room ? *upload_size : room;
        memcpy(r->up + r->up_len, upload, k);
        r->up_len += k;
        *upload_size -= k;
        if (*upload_size)
            suspend(r);             /* full: wait for curl to take some */
        if (r->read_paused && k) {
            r->read_paused = 0;
            curl_easy_pause(r->xfer.easy, CURLPAUSE_CONT);
        }
        return MHD_YES;
    }
    if (!r->up_done) {
        r->up_done = 1;
        if (r->read_paused) {
            r->read_paused = 0;
            curl_easy_pause(r->xfer.easy, CURLPAUSE_CONT);
        }
    }
    if (!r->headers_done && !r->ended) {
        suspend(r);                 /* until the upstream answers */
        return MHD_YES;
    }
    return answer(r);
}

/* ---- start and stop ---------------------------------------------------------- */

static enum MHD_Result copy_header(void *cls, enum MHD_ValueKind kind, const char *name,
                                   const char *value)
{
    struct relay *r = cls;
    char line[8192];
    (void)kind;
    static const char *const skip[] = {"host", "expect", "content-length", "via"};
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        if (strcasecmp(name, skip[i]) == 0)
            return MHD_YES;
    const char *conn = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Connection");
    if (hdrs_is_hop_by_hop(name) || (conn && hdrs_list_has(conn, name)))
        return MHD_YES;
    snprintf(line, sizeof line, "%s: %s", name, value ? value : "");
    r->req_headers = curl_slist_append(r->req_headers, line);
    return MHD_YES;
}

/* Every method but the safe ones (RFC 9110 §9.2.1, and those the IANA
 * method registry marks safe) is unsafe: a method edgecache does not know
 * invalidates too (RFC 9111 §4.4). */
static int unsafe_method(const char *m)
{
    static const char *const safe[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PROPFIND",
                                       "REPORT", "SEARCH"};
    for (size_t i = 0; i < sizeof safe / sizeof safe[0]; i++)
        if (strcmp(m, safe[i]) == 0)
            return 0;
    return 1;
}

struct relay *relay_start(struct edge *e, struct worker *w, struct MHD_Connection *conn,
                          const char *method, const struct route_target *rt, char *reason,
                          size_t reasonlen)
{
    struct relay *r = calloc(1, sizeof *r);
    char line[1200];
    if (!r || !(r->up = malloc(RELAY_BUF)) || !(r->down = malloc(RELAY_BUF))
        || !(r->key = strdup(rt->key)) || !(r->origin_url = strdup(rt->origin_url))
        || !(r->xfer.easy = upstream_easy(e->cfg->connect_timeout_ms, r->error))) {
        if (r) {
            free(r->up);
            free(r->down);
            free(r->key);
            free(r->origin_url);
        }
        free(r);
        snprintf(reason, reasonlen, "out of memory");
        return NULL;
    }
    worker_wake_main();             /* the transfer starts on the main loop */
    r->magic = RELAY_MAGIC;
    r->e = e;
    r->w = w;
    r->conn = conn;
    r->refs = 2;                    /* the request's and the transfer's */
    r->transfer_ref = 1;
    r->length = -1;
    r->unsafe = unsafe_method(method);
    r->xfer.done = on_done;
    MHD_get_connection_values(conn, MHD_HEADER_KIND, copy_header, r);
    const char *via = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Via");
    snprintf(line, sizeof line, "Via: %s%s1.1 %s (edgecache/%s)", via ? via : "",
             via ? ", " : "", e->cfg->node_id, EDGECACHE_VERSION);
    r->req_headers = curl_slist_append(r->req_headers, line);
    const char *clen = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    CURL *c = r->xfer.easy;
    curl_easy_setopt(c, CURLOPT_URL, rt->origin_url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    r->uploads = strcmp(method, "OPTIONS") != 0 && strcmp(method, "DELETE") != 0
                 && strcmp(method, "TRACE") != 0;
    if (r->uploads)
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    if (clen)
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)strtoll(clen, NULL, 10));
    curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(c, CURLOPT_READDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->req_headers);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME,
                     (long)((e->cfg->stall_timeout_ms + 999) / 1000));
    r->next = e->relays;
    if (e->relays)
        e->relays->prev = r;
    e->relays = r;
    if (upstream_start(e->upstream, &r->xfer) != 0) {
        snprintf(reason, reasonlen, "cannot start the upstream request");
        r->refs = 1;
        relay_unref(r);
        return NULL;
    }
    e->stats.upstream_requests++;
    log_msg(&e->log, LOG_INFO, "relay", "%s %s", method, rt->origin_url);
    return r;
}

void relay_release(struct relay **rp)
{
    struct relay *r = *rp;
    if (!r)
        return;
    *rp = NULL;
    r->conn = NULL;
    r->suspended = 0;
    relay_unref(r);
}

void relay_stop_all(struct edge *e)
{
    for (struct relay *r = e->relays, *next; r; r = next) {
        next = r->next;
        if (r->transfer_ref) {
            upstream_cancel(e->upstream, &r->xfer);
            r->ended = 1;
            r->result = CURLE_ABORTED_BY_CALLBACK;
            wake(r);
            r->transfer_ref = 0;
            relay_unref(r);
        }
    }
}
