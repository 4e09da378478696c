/* relay — see relay.h. */
#include "server/relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache/index.h"
#include "cache/route.h"
#include "cache/upstream.h"
#include "version.h"

#define RELAY_BUF (256 * 1024)      /* each way */
#define RELAY_MAGIC 0x52656c61u

struct relay {
    struct upstream_xfer xfer;      /* first: the completion finds the relay */
    unsigned magic;
    struct edge *e;
    struct MHD_Connection *conn;    /* NULL once the request is complete */
    int refs;
    int suspended;                  /* we suspended conn */
    char *key;
    int unsafe;
    struct curl_slist *req_headers;
    struct relay *next, *prev;      /* the edge's relays */

    char *up;                       /* client -> upstream */
    size_t up_len;
    int up_done;                    /* the client sent its whole body */
    int uploads;                    /* the method carries a body upstream */
    int read_paused;

    long status;                    /* upstream -> client */
    struct curl_slist *resp_headers;    /* "Name: value" lines to pass on */
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
    curl_slist_free_all(r->resp_headers);
    free(r->key);
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
        mhduv_suspend(&r->e->data_uv, r->conn);
    }
}

static void wake(struct relay *r)
{
    if (r->suspended && r->conn) {
        r->suspended = 0;
        mhduv_resume(&r->e->data_uv, r->conn);
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

static int hop_by_hop(const char *line, size_t len)
{
    static const char *const names[] = {
        "connection:", "keep-alive:", "proxy-connection:", "transfer-encoding:", "te:",
        "trailer:", "upgrade:", "content-length:", "proxy-authenticate:", "date:",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (len >= strlen(names[i]) && strncasecmp(line, names[i], strlen(names[i])) == 0)
            return 1;
    return 0;
}

static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
    struct relay *r = arg;
    size_t len = size * n;
    if (len >= 5 && strncasecmp(buf, "HTTP/", 5) == 0) {
        curl_slist_free_all(r->resp_headers);
        r->resp_headers = NULL;
    } else if ((len == 2 && buf[0] == '\r') || (len == 1 && buf[0] == '\n')) {
        curl_easy_getinfo(r->xfer.easy, CURLINFO_RESPONSE_CODE, &r->status);
        if (r->status >= 200) {
            curl_easy_getinfo(r->xfer.easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &r->length);
            r->headers_done = 1;
            wake(r);
        }
    } else if (!hop_by_hop(buf, len)) {
        while (len && (buf[len - 1] == '\r' || buf[len - 1] == '\n'))
            len--;
        char *line = strndup(buf, len);
        if (line)
            r->resp_headers = curl_slist_append(r->resp_headers, line);
        free(line);
    }
    return size * n;
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

struct forget {
    uv_work_t work;
    struct index *index;
    char *key;
};

static void forget_work(uv_work_t *w)
{
    struct forget *f = w->data;
    index_drop_url(f->index, f->key);
}

static void forget_after(uv_work_t *w, int status)
{
    struct forget *f = w->data;
    (void)status;
    free(f->key);
    free(f);
}

/* RFC 9111 §4.4: a successful unsafe method invalidates the target URI. */
static void invalidate(struct relay *r)
{
    struct forget *f = calloc(1, sizeof *f);
    if (!f || !(f->key = strdup(r->key))) {
        free(f);
        return;
    }
    f->index = r->e->index;
    f->work.data = f;
    if (uv_queue_work(r->e->loop, &f->work, forget_work, forget_after) != 0)
        forget_after(&f->work, 0);
    else
        r->e->stats.invalidations++;
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

static ssize_t answer_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct relay *r = cls;
    (void)pos;
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

static void answer_free(void *cls)
{
    relay_unref(cls);
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
    for (struct curl_slist *h = r->resp_headers; h; h = h->next) {
        char *colon = strchr(h->data, ':');
        if (!colon)
            continue;
        *colon = '\0';
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        MHD_add_response_header(resp, h->data, v);
        *colon = ':';
    }
    MHD_add_response_header(resp, "Cache-Status", "edgecache; fwd=request; detail=relayed");
    r->e->stats.relayed++;
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result relay_continue(struct relay *r, const char *upload, size_t *upload_size)
{
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
    static const char *const skip[] = {"host", "connection", "keep-alive", "proxy-connection",
                                       "te", "trailer", "transfer-encoding", "upgrade",
                                       "expect", "content-length", "via"};
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        if (strcasecmp(name, skip[i]) == 0)
            return MHD_YES;
    snprintf(line, sizeof line, "%s: %s", name, value ? value : "");
    r->req_headers = curl_slist_append(r->req_headers, line);
    return MHD_YES;
}

static int unsafe_method(const char *m)
{
    return strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 || strcmp(m, "DELETE") == 0
           || strcmp(m, "PATCH") == 0;
}

struct relay *relay_start(struct edge *e, struct MHD_Connection *conn, const char *method,
                          const struct route_target *rt, char *reason, size_t reasonlen)
{
    struct relay *r = calloc(1, sizeof *r);
    char line[1200];
    if (!r || !(r->up = malloc(RELAY_BUF)) || !(r->down = malloc(RELAY_BUF))
        || !(r->key = strdup(rt->key))
        || !(r->xfer.easy = upstream_easy(e->cfg->connect_timeout_ms, r->error))) {
        if (r) {
            free(r->up);
            free(r->down);
            free(r->key);
        }
        free(r);
        snprintf(reason, reasonlen, "out of memory");
        return NULL;
    }
    r->magic = RELAY_MAGIC;
    r->e = e;
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
