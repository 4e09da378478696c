/*
 * admin — the control plane's request plumbing (see server/admin/admin.h):
 * requests and their bodies, the token, answers, jobs on the thread pool.
 *
 * Thread: loop thread only (a job's run on the pool).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/crypto.h>

#include "cache/digest.h"
#include "server/admin/admin.h"
#include "server/edge.h"

#define ADMIN_REQ_MAGIC 0x41646d21u

enum MHD_Result admin_reply(struct MHD_Connection *c, unsigned status, const char *ctype,
                            char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"edgecache\"");
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    return admin_reply(c, status, "text/plain; charset=utf-8", (char *)text, strlen(text),
                 MHD_RESPMEM_MUST_COPY);
}

int admin_authorised(const struct edge *e, struct MHD_Connection *c)
{
    const char *token = e->cfg->admin_token;
    if (!token || !token[0])
        return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    /* compared as SHA-256 digests: constant time, whatever the lengths */
    unsigned char mine[DIGEST_SHA256_LEN], theirs[DIGEST_SHA256_LEN];
    struct digest d = {0};
    if (digest_init(&d) != 0)
        return 0;
    digest_update(&d, token, strlen(token));
    digest_final(&d, mine);
    if (digest_init(&d) != 0) {
        digest_free(&d);
        return 0;
    }
    digest_update(&d, h, strlen(h));
    digest_final(&d, theirs);
    digest_free(&d);
    return CRYPTO_memcmp(mine, theirs, sizeof mine) == 0;
}

enum MHD_Result admin_reply_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    return reply_text(c, status, text);
}

enum MHD_Result admin_reply_json(struct MHD_Connection *c, unsigned status, char *json_text)
{
    return admin_reply(c, status, "application/json", json_text, strlen(json_text),
                 MHD_RESPMEM_MUST_FREE);
}

json_t *admin_body_json(struct admin_req *req, enum MHD_Result *ret)
{
    json_error_t jerr;
    char text[400];
    json_t *root = json_loadb(req->body ? req->body : "", req->len, 0, &jerr);
    if (!root) {
        snprintf(text, sizeof text, "malformed JSON at line %d, column %d: %s\n", jerr.line,
                 jerr.column, jerr.text);
        *ret = reply_text(req->conn, MHD_HTTP_BAD_REQUEST, text);
    }
    return root;
}

void admin_answer(struct admin_req *req, unsigned status, const char *ctype, const char *text)
{
    free(req->answer);
    req->answer = strdup(text);
    req->status = req->answer ? status : MHD_HTTP_INTERNAL_SERVER_ERROR;
    req->ctype = ctype;
}

static void job_work(uv_work_t *w)
{
    struct admin_job *j = w->data;
    j->run(j);
}

static void job_unlink(struct admin_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else if (j->e->admin_jobs == j)
        j->e->admin_jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    j->next = j->prev = NULL;
}

static void job_after(uv_work_t *w, int status)
{
    struct admin_job *j = w->data;
    struct admin_req *req = j->req;
    (void)status;
    job_unlink(j);
    j->finish(j);
    if (req) {
        req->job = NULL;
        if (!req->answer)
            admin_answer(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "the call failed\n");
        if (j->e->admin_daemon)
            mhduv_resume(&j->e->admin_uv, req->conn);
    }
    j->destroy(j);
}

enum MHD_Result admin_job_start(struct admin_req *req, struct admin_job *j)
{
    struct edge *e = req->e;
    j->work.data = j;
    j->req = req;
    j->e = e;
    if (e->stopping || uv_queue_work(e->loop, &j->work, job_work, job_after) != 0) {
        j->destroy(j);
        return reply_text(req->conn, e->stopping ? MHD_HTTP_SERVICE_UNAVAILABLE
                                                 : MHD_HTTP_INTERNAL_SERVER_ERROR,
                          e->stopping ? "edgecache is shutting down\n"
                                      : "cannot queue the work\n");
    }
    j->prev = NULL;
    j->next = e->admin_jobs;
    if (e->admin_jobs)
        e->admin_jobs->prev = j;
    e->admin_jobs = j;
    req->job = j;
    mhduv_suspend(&e->admin_uv, req->conn);
    return MHD_YES;
}

/* 1 when the client has closed its side with nothing more to read. */
static int peer_closed(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    char byte;
    return ci && recv(ci->connect_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* 1 when a client that closed its side cannot complete the body it
 * announced: what was streamed and what waits in the socket fall short
 * (without a Content-Length: nothing waits). */
static int body_cut_short(struct admin_req *req)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    int pending = 0;
    if (!ci || ioctl(ci->connect_fd, FIONREAD, &pending) != 0)
        return 0;
    if (req->announced == UINT64_MAX)
        return pending == 0;
    return req->streamed + (uint64_t)(pending > 0 ? pending : 0) < req->announced;
}

/* Watches a streamed request's socket for the client's end of stream,
 * which MHD's edge-triggered reads do not always see while it waits for
 * more of a body. Freed in its close callback. */
struct admin_watch {
    uv_poll_t poll;
    struct admin_req *req;          /* NULL once the request is gone */
};

static void watch_closed(uv_handle_t *h)
{
    free(h->data);
}

static void watch_stop(struct admin_req *req)
{
    struct admin_watch *w = req->watch;
    if (!w)
        return;
    req->watch = NULL;
    w->req = NULL;
    uv_close((uv_handle_t *)&w->poll, watch_closed);
}

/* The client closed its side: a body cut short releases its sink now (its
 * temp files go) and the connection ends with its next read or its
 * timeout; a body that may still be complete is left to MHD. */
static void on_disconnect(uv_poll_t *h, int status, int events)
{
    struct admin_watch *w = h->data;
    struct admin_req *req = w->req;
    (void)status, (void)events;
    if (!req)
        return;
    watch_stop(req);
    if (req->sink_ctx && body_cut_short(req)) {
        log_msg(&req->e->log, LOG_INFO, "admin", "the client went away after %llu bytes of "
                "its upload", (unsigned long long)req->streamed);
        req->sink->release(req->sink_ctx);
        req->sink_ctx = NULL;
        req->cut = 1;
    }
}

static void watch_start(struct admin_req *req)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct admin_watch *w = ci ? calloc(1, sizeof *w) : NULL;
    if (!w)
        return;
    w->req = req;
    w->poll.data = w;
    if (uv_poll_init_socket(req->e->loop, &w->poll, ci->connect_fd) != 0) {
        free(w);
        return;
    }
    req->watch = w;
    if (uv_poll_start(&w->poll, UV_DISCONNECT, on_disconnect) != 0)
        watch_stop(req);
}

static int stream_body(struct admin_req *req, const char *data, size_t n)
{
    if (!req->sink_ctx)
        return req->cut ? -1 : 0;
    if (req->sink->data(req, req->sink_ctx, data, n) != 0)
        return -1;
    req->streamed += n;
    /* MHD's edge-triggered reads can miss an end of stream that came with
     * the last bytes: a body cut short is noticed here instead */
    if (req->streamed < req->announced && peer_closed(req->conn))
        return -1;
    /* MHD reads one buffer per connection and run; it says nothing of
     * bytes still waiting in the socket, so it runs again at once */
    mhduv_kick(&req->e->admin_uv);
    return 0;
}

int admin_collect_body(struct admin_req *req, const char *data, size_t n)
{
    if (req->sink)
        return stream_body(req, data, n);
    if (req->too_big || req->len + n > req->e->cfg->manifest_max_bytes) {
        req->too_big = 1;
        return 0;
    }
    char *grown = realloc(req->body, req->len + n + 1);
    if (!grown)
        return -1;
    memcpy(grown + req->len, data, n);
    req->body = grown;
    req->len += n;
    req->body[req->len] = '\0';
    return 0;
}

void admin_sink_set(struct admin_req *req, const struct admin_sink *sink, void *ctx)
{
    const char *cl = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    req->sink = sink;
    req->sink_ctx = ctx;
    req->streamed = 0;
    req->announced = cl ? strtoull(cl, NULL, 10) : UINT64_MAX;
    watch_start(req);
}

void *admin_sink_detach(struct admin_req *req)
{
    void *ctx = req->sink_ctx;
    watch_stop(req);
    req->sink_ctx = NULL;
    return ctx;
}

struct admin_req *admin_req_new(struct edge *e, struct MHD_Connection *c)
{
    struct admin_req *req = calloc(1, sizeof *req);
    if (!req)
        return NULL;
    req->magic = ADMIN_REQ_MAGIC;
    req->e = e;
    req->conn = c;
    return req;
}

void admin_req_free(struct admin_req *req)
{
    if (req->job)
        req->job->req = NULL;
    watch_stop(req);
    if (req->sink && req->sink_ctx)
        req->sink->release(req->sink_ctx);
    free(req->body);
    free(req->answer);
    req->magic = 0;
    free(req);
}

enum MHD_Result admin_send_answer(struct admin_req *req)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        strlen(req->answer), req->answer, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, req->ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (req->warning)   /* RFC 7234 §5.5's miscellaneous persistent warning */
        MHD_add_response_header(resp, "Warning",
                                "299 edgecache \"the rewritten URLs name a loopback address: "
                                "set advertise_url to the URL devices reach this cache at\"");
    enum MHD_Result ret = MHD_queue_response(req->conn, req->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

void admin_release_jobs(struct edge *e)
{
    for (struct admin_job *j = e->admin_jobs; j; j = j->next) {
        struct admin_req *req = j->req;
        if (!req)
            continue;
        j->req = NULL;
        req->job = NULL;
        admin_answer(req, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8",
                     "edgecache is shutting down\n");
        mhduv_resume(&e->admin_uv, req->conn);
    }
}
