/*
 * admin — the control plane (DESIGN.md §7) on its own listener, default
 * 127.0.0.1:8081: GET /healthz (no token), GET /status (JSON), GET /metrics
 * (Prometheus text), POST /api/v1/expectations (api_expect.c). When
 * admin_token is set, every call but /healthz needs
 * "Authorization: Bearer <token>". Request plumbing: server/admin.h.
 *
 * Thread: loop thread only.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "cache/digest.h"
#include "cache/evict.h"
#include "cache/fill.h"
#include "cache/index.h"
#include "server/admin.h"
#include "server/edge.h"
#include "version.h"

#define ADMIN_REQ_MAGIC 0x41646d21u

/* server/dashboard.html, compiled in by CMake. */
extern const unsigned char edgecache_dashboard[];
extern const size_t edgecache_dashboard_len;

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *ctype,
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
    return reply(c, status, "text/plain; charset=utf-8", (char *)text, strlen(text),
                 MHD_RESPMEM_MUST_COPY);
}

static int authorised(const struct edge *e, struct MHD_Connection *c)
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

static json_t *counters_json(const struct stats *s)
{
    json_t *o = json_object();
#define STATS_JSON(field, family, labels, type, help) \
    json_object_set_new(o, #field, json_integer((json_int_t)s->field));
    STATS_ENTRIES(STATS_JSON)
#undef STATS_JSON
    return o;
}

static void fill_json(void *ctx, const struct fill_info *fi)
{
    json_t *o = json_object();
    json_object_set_new(o, "url", json_string(fi->origin_url));
    json_object_set_new(o, "key", json_string(fi->key));
    json_object_set_new(o, "state", json_string(fill_state_name(fi->state)));
    json_object_set_new(o, "bytes", json_integer((json_int_t)fi->received));
    json_object_set_new(o, "total", fi->has_total ? json_integer((json_int_t)fi->total) : json_null());
    json_object_set_new(o, "readers", json_integer(fi->readers));
    if (fi->status)
        json_object_set_new(o, "status", json_integer(fi->status));
    if (fi->n_redirects > 1) {      /* the URLs it was sent to, in order */
        json_t *hops = json_array();
        for (unsigned i = 0; i < fi->n_redirects; i++)
            json_array_append_new(hops, json_string(fi->redirects[i]));
        json_object_set_new(o, "redirects", hops);
    }
    json_array_append_new(ctx, o);
}

static void upstream_json(void *ctx, const struct fills_upstream *u)
{
    json_t *o = json_pack("{s:s, s:b, s:I}", "target", u->target, "up", u->up, "failures",
                          (json_int_t)u->failures);
    json_object_set_new(o, "last_success", u->last_ok ? json_integer(u->last_ok) : json_null());
    json_object_set_new(o, "last_failure", u->last_fail ? json_integer(u->last_fail) : json_null());
    json_array_append_new(ctx, o);
}

static void upstream_up_metric(void *ctx, const struct fills_upstream *u)
{
    fprintf(ctx, "edgecache_upstream_up{upstream=\"%s\"} %d\n", u->target, u->up);
}

static void upstream_ok_metric(void *ctx, const struct fills_upstream *u)
{
    fprintf(ctx, "edgecache_upstream_last_success_timestamp_seconds{upstream=\"%s\"} %lld\n",
            u->target, (long long)u->last_ok);
}

static enum MHD_Result status_page(struct edge *e, struct MHD_Connection *c)
{
    json_t *root = json_object();
    json_t *fills = json_array();
    if (e->fills)
        fills_foreach(e->fills, fill_json, fills);
    json_object_set_new(root, "version", json_string(EDGECACHE_VERSION));
    json_object_set_new(root, "node_id", json_string(e->cfg->node_id));
    json_object_set_new(root, "uptime_s", json_integer((json_int_t)(time(NULL) - e->started)));
    json_object_set_new(root, "cache_dir", json_string(e->cfg->cache_dir));
    json_object_set_new(root, "objects", json_integer((json_int_t)e->stats.objects));
    json_object_set_new(root, "stored_bytes", json_integer((json_int_t)e->stats.stored_bytes));
    json_object_set_new(root, "budget_bytes",
                        e->evictor ? json_integer((json_int_t)evict_budget(e->evictor)) : json_null());
    uint64_t hits = e->stats.req_hit;
    uint64_t served = hits + e->stats.req_miss + e->stats.req_collapsed;
    json_object_set_new(root, "hit_ratio", json_real(served ? (double)hits / (double)served : 0.0));
    json_object_set_new(root, "counters", counters_json(&e->stats));
    json_object_set_new(root, "fills", fills);
    json_t *ups = json_array();
    if (e->fills)
        fills_foreach_upstream(e->fills, upstream_json, ups);
    json_object_set_new(root, "upstreams", ups);
    json_object_set_new(root, "parent", e->cfg->parent && e->cfg->parent[0]
                                            ? json_string(e->cfg->parent) : json_null());
    json_object_set_new(root, "deployments", api_deployments_json(e));
    char *raw = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    char *text = raw ? log_redact_dup(raw) : NULL;  /* no SAS sig nor presign secret */
    free(raw);
    if (!text)
        return MHD_NO;
    return reply(c, MHD_HTTP_OK, "application/json", text, strlen(text), MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result metrics_page(struct edge *e, struct MHD_Connection *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (!out)
        return MHD_NO;
    stats_print_prometheus(&e->stats, out);
    if (e->fills) {                 /* one family after the other */
        fputs("# HELP edgecache_upstream_up Whether each upstream asked so far answers (1) "
              "or not (0)\n# TYPE edgecache_upstream_up gauge\n", out);
        fills_foreach_upstream(e->fills, upstream_up_metric, out);
        fputs("# HELP edgecache_upstream_last_success_timestamp_seconds When it last "
              "answered (0: never)\n"
              "# TYPE edgecache_upstream_last_success_timestamp_seconds gauge\n", out);
        fills_foreach_upstream(e->fills, upstream_ok_metric, out);
    }
    fclose(out);
    return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4", text, len, MHD_RESPMEM_MUST_FREE);
}

enum MHD_Result admin_reply_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    return reply_text(c, status, text);
}

enum MHD_Result admin_reply_json(struct MHD_Connection *c, unsigned status, char *json_text)
{
    return reply(c, status, "application/json", json_text, strlen(json_text),
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

static int collect_body(struct admin_req *req, const char *data, size_t n)
{
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

static enum MHD_Result route_call(struct admin_req *req, const char *url, const char *method)
{
    struct edge *e = req->e;
    struct MHD_Connection *c = req->conn;
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (strcmp(url, "/") == 0 && get)   /* the page asks /status itself, with the token */
        return reply(c, MHD_HTTP_OK, "text/html; charset=utf-8", (char *)edgecache_dashboard,
                     edgecache_dashboard_len, MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/healthz") == 0 && get)
        return e->draining ? reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "stopping\n")
                           : reply_text(c, MHD_HTTP_OK, "ok\n");
    if (!authorised(e, c))
        return reply_text(c, MHD_HTTP_UNAUTHORIZED,
                          "this call needs Authorization: Bearer <admin_token>\n");
    if (strcmp(url, "/status") == 0 && get)
        return status_page(e, c);
    if (strcmp(url, "/metrics") == 0 && get)
        return metrics_page(e, c);
    if (strcmp(url, "/api/v1/objects") == 0) {
        if (!get)
            return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET\n");
        return api_objects_list(req);
    }
    if (strncmp(url, "/api/v1/objects/", 16) == 0) {
        if (strcmp(method, "DELETE") != 0)
            return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use DELETE\n");
        return api_objects_delete(req, url + 16);
    }
    if (strncmp(url, "/api/v1/deployments/", 20) == 0) {
        if (strcmp(method, "DELETE") != 0)
            return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use DELETE\n");
        return api_deployment_delete(req, url + 20);
    }
    if (strcmp(url, "/api/v1/expectations") == 0 || strcmp(url, "/api/v1/prefetch") == 0
        || strcmp(url, "/api/v1/rewrite") == 0) {
        char text[160];
        if (strcmp(method, "POST") != 0)
            return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST\n");
        if (req->too_big) {
            snprintf(text, sizeof text, "the body is larger than %llu bytes (config key: "
                     "manifest_max_bytes)\n", (unsigned long long)e->cfg->manifest_max_bytes);
            return reply_text(c, MHD_HTTP_CONTENT_TOO_LARGE, text);
        }
        if (url[8] == 'e')
            return api_expectations(req);
        if (url[8] == 'p')
            return api_prefetch(req);
        const char *pf = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "prefetch");
        return api_manifest(req, pf && (strcmp(pf, "1") == 0 || strcmp(pf, "true") == 0), 1);
    }
    return reply_text(c, MHD_HTTP_NOT_FOUND,
                      "no such call: see /healthz, /status, /metrics, /api/v1/expectations, "
                      "/api/v1/rewrite, /api/v1/prefetch, /api/v1/deployments/{id}, /api/v1/objects\n");
}

static enum MHD_Result on_admin(void *cls, struct MHD_Connection *c, const char *url,
                                const char *method, const char *version, const char *upload,
                                size_t *upload_size, void **req_cls)
{
    struct admin_req *req = *req_cls;
    (void)version;
    if (!req) {                     /* answer from the second call: keep-alive */
        if (!(req = calloc(1, sizeof *req)))
            return MHD_NO;
        req->magic = ADMIN_REQ_MAGIC;
        req->e = cls;
        req->conn = c;
        *req_cls = req;
        /* a body announced larger than allowed is refused before it is read */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        struct edge *e = cls;
        if (cl && strtoull(cl, NULL, 10) > e->cfg->manifest_max_bytes) {
            char text[160];
            snprintf(text, sizeof text, "the body is larger than %llu bytes (config key: "
                     "manifest_max_bytes)\n", (unsigned long long)e->cfg->manifest_max_bytes);
            return reply_text(c, MHD_HTTP_CONTENT_TOO_LARGE, text);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        int rc = collect_body(req, upload, *upload_size);
        *upload_size = 0;
        return rc == 0 ? MHD_YES : MHD_NO;
    }
    if (req->answer) {              /* a job finished: its answer */
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            strlen(req->answer), req->answer, MHD_RESPMEM_MUST_COPY);
        if (!resp)
            return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, req->ctype);
        enum MHD_Result ret = MHD_queue_response(c, req->status, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    return route_call(req, url, method);
}

static void on_admin_done(void *cls, struct MHD_Connection *c, void **req_cls,
                          enum MHD_RequestTerminationCode toe)
{
    struct admin_req *req = *req_cls;
    (void)cls, (void)c, (void)toe;
    if (!req)
        return;
    *req_cls = NULL;
    if (req->job)
        req->job->req = NULL;
    free(req->body);
    free(req->answer);
    req->magic = 0;
    free(req);
}

int admin_start(struct edge *e, char *err, size_t errlen)
{
    struct MHD_OptionItem extra[] = {
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_admin_done, e},
        {MHD_OPTION_END, 0, NULL},
    };
    e->admin_daemon = edge_listen(e, &e->cfg->admin_listen, 64, on_admin, e, extra, err, errlen);
    if (!e->admin_daemon)
        return -1;
    int rc = mhduv_start(&e->admin_uv, e->loop, e->admin_daemon);
    if (rc) {
        snprintf(err, errlen, "admin_listen: %s", uv_strerror(rc));
        return -1;
    }
    return 0;
}

void admin_stop(struct edge *e)
{
    if (!e->admin_daemon)
        return;
    /* The jobs finish on the pool without their requests; each request
     * still waiting is answered now, so no connection stays suspended. */
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
    unsigned left = mhduv_drain(&e->admin_uv, 16);
    if (left)
        log_msg(&e->log, LOG_ERROR, "admin", "%u connections still suspended at shutdown", left);
    mhduv_stop(&e->admin_uv, NULL);
    MHD_stop_daemon(e->admin_daemon);
    e->admin_daemon = NULL;
}
