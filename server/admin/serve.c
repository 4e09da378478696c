/*
 * serve — the control plane's listener (DESIGN.md §7, default
 * 127.0.0.1:8081) and its route table: each call is one row (method,
 * path or path prefix, whether it needs the token, whether it takes a
 * collected body, its handler in server/admin/api.h, and for a call whose
 * body streams to it, the handler that starts it once the header is in).
 * When admin_token is set, every call but /healthz and the dashboard page
 * needs "Authorization: Bearer <token>"; a streamed call's token is checked
 * before any of its body is read.
 *
 * Thread: loop thread only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/admin/api.h"
#include "server/edge.h"

enum method { M_GET, M_POST, M_DELETE };

struct route {
    enum method method;             /* GET also answers HEAD */
    const char *path;
    int prefix;                     /* path is a prefix; the rest is the handler's argument */
    int open;                       /* no token needed */
    int body;                       /* takes a body (bounded by manifest_max_bytes) */
    enum MHD_Result (*handler)(struct admin_req *req, const char *rest);
    /* a call whose body streams to it instead (no bound here): run once
     * the header is in, after the token is checked */
    enum MHD_Result (*begin)(struct admin_req *req);
};

static enum MHD_Result do_healthz(struct admin_req *r, const char *x) { (void)x; return api_healthz(r); }
static enum MHD_Result do_dashboard(struct admin_req *r, const char *x) { (void)x; return api_dashboard(r); }
static enum MHD_Result do_status(struct admin_req *r, const char *x) { (void)x; return api_status(r); }
static enum MHD_Result do_metrics(struct admin_req *r, const char *x) { (void)x; return api_metrics(r); }
static enum MHD_Result do_objects(struct admin_req *r, const char *x) { (void)x; return api_objects_list(r); }
static enum MHD_Result do_object_delete(struct admin_req *r, const char *sha) { return api_objects_delete(r, sha); }
static enum MHD_Result do_deployment_delete(struct admin_req *r, const char *id) { return api_deployment_delete(r, id); }
static enum MHD_Result do_expectations(struct admin_req *r, const char *x) { (void)x; return api_expectations(r); }
static enum MHD_Result do_prefetch(struct admin_req *r, const char *x) { (void)x; return api_prefetch(r); }
static enum MHD_Result do_import(struct admin_req *r, const char *x) { (void)x; return api_import(r); }

static enum MHD_Result do_rewrite(struct admin_req *r, const char *x)
{
    const char *pf = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "prefetch");
    (void)x;
    return api_manifest(r, pf && (strcmp(pf, "1") == 0 || strcmp(pf, "true") == 0), 1);
}

static const struct route routes[] = {
    {M_GET, "/healthz", 0, 1, 0, do_healthz, NULL},
    {M_GET, "/", 0, 1, 0, do_dashboard, NULL},
    {M_GET, "/status", 0, 0, 0, do_status, NULL},
    {M_GET, "/metrics", 0, 0, 0, do_metrics, NULL},
    {M_GET, "/api/v1/objects", 0, 0, 0, do_objects, NULL},
    {M_DELETE, "/api/v1/objects/", 1, 0, 0, do_object_delete, NULL},
    {M_DELETE, "/api/v1/deployments/", 1, 0, 0, do_deployment_delete, NULL},
    {M_POST, "/api/v1/expectations", 0, 0, 1, do_expectations, NULL},
    {M_POST, "/api/v1/rewrite", 0, 0, 1, do_rewrite, NULL},
    {M_POST, "/api/v1/prefetch", 0, 0, 1, do_prefetch, NULL},
    {M_POST, "/api/v1/import", 0, 0, 0, do_import, api_import_begin},
};

static const char *const method_names[] = {"GET", "POST", "DELETE"};

static int method_is(const char *method, enum method m)
{
    if (m == M_GET && strcmp(method, "HEAD") == 0)
        return 1;
    return strcmp(method, method_names[m]) == 0;
}

static int path_is(const struct route *rt, const char *url)
{
    size_t n = strlen(rt->path);
    return rt->prefix ? strncmp(url, rt->path, n) == 0 && url[n] : strcmp(url, rt->path) == 0;
}

static enum MHD_Result not_found(struct MHD_Connection *c)
{
    char text[600] = "no such call; the calls are:";
    size_t pos = strlen(text);
    for (size_t i = 0; i < sizeof routes / sizeof routes[0] && pos < sizeof text; i++)
        pos += (size_t)snprintf(text + pos, sizeof text - pos, " %s %s%s", method_names[routes[i].method],
                                routes[i].path, routes[i].prefix ? "{id}" : "");
    if (pos < sizeof text - 1)
        strcat(text, "\n");
    return admin_reply_text(c, MHD_HTTP_NOT_FOUND, text);
}

/* The row for a request, or NULL (route_call answers 404 or 405). */
static const struct route *route_of(const char *url, const char *method)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (path_is(&routes[i], url) && method_is(method, routes[i].method))
            return &routes[i];
    return NULL;
}

static enum MHD_Result body_too_big(struct MHD_Connection *c, const struct edge *e)
{
    char text[160];
    snprintf(text, sizeof text, "the body is larger than %llu bytes (config key: "
             "manifest_max_bytes)\n", (unsigned long long)e->cfg->manifest_max_bytes);
    return admin_reply_text(c, MHD_HTTP_CONTENT_TOO_LARGE, text);
}

/* The first call, once the header is in: a streamed call starts now (its
 * token checked before any byte of the body is read); for the others a
 * body announced larger than allowed is refused before it is read. */
static enum MHD_Result route_begin(struct admin_req *req, const char *url, const char *method)
{
    struct edge *e = req->e;
    const struct route *rt = route_of(url, method);
    if (rt && rt->begin) {
        if (!rt->open && !admin_authorised(e, req->conn))
            return admin_reply_text(req->conn, MHD_HTTP_UNAUTHORIZED,
                                    "this call needs Authorization: Bearer <admin_token>\n");
        return rt->begin(req);
    }
    const char *cl = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > e->cfg->manifest_max_bytes)
        return body_too_big(req->conn, e);
    return MHD_YES;
}

static enum MHD_Result route_call(struct admin_req *req, const char *url, const char *method)
{
    struct edge *e = req->e;
    struct MHD_Connection *c = req->conn;
    const struct route *path_match = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct route *rt = &routes[i];
        if (!path_is(rt, url))
            continue;
        path_match = rt;
        if (!method_is(method, rt->method))
            continue;
        int open = rt->open || (rt->handler == do_metrics && e->cfg->metrics_public);
        if (!open && !admin_authorised(e, c))
            return admin_reply_text(c, MHD_HTTP_UNAUTHORIZED,
                                    "this call needs Authorization: Bearer <admin_token>\n");
        if (rt->body && req->too_big)
            return body_too_big(c, e);
        return rt->handler(req, rt->prefix ? url + strlen(rt->path) : url);
    }
    if (path_match) {
        char text[80];
        snprintf(text, sizeof text, "use %s\n", method_names[path_match->method]);
        return admin_reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, text);
    }
    return not_found(c);
}

static enum MHD_Result on_admin(void *cls, struct MHD_Connection *c, const char *url,
                                const char *method, const char *version, const char *upload,
                                size_t *upload_size, void **req_cls)
{
    struct admin_req *req = *req_cls;
    (void)version;
    if (!req) {                     /* answer from the second call: keep-alive */
        if (!(req = admin_req_new(cls, c)))
            return MHD_NO;
        *req_cls = req;
        return route_begin(req, url, method);
    }
    if (*upload_size) {
        int rc = admin_collect_body(req, upload, *upload_size);
        *upload_size = 0;
        return rc == 0 ? MHD_YES : MHD_NO;
    }
    if (req->answer)                /* a job finished: its answer */
        return admin_send_answer(req);
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
    admin_req_free(req);
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
    status_history_start(e);
    return 0;
}

void admin_stop(struct edge *e)
{
    if (!e->admin_daemon)
        return;
    /* The jobs finish on the pool without their requests; each request
     * still waiting is answered now, so no connection stays suspended. */
    admin_release_jobs(e);
    unsigned left = mhduv_drain(&e->admin_uv, 16);
    if (left)
        log_msg(&e->log, LOG_ERROR, "admin", "%u connections still suspended at shutdown", left);
    mhduv_stop(&e->admin_uv, NULL);
    MHD_stop_daemon(e->admin_daemon);
    e->admin_daemon = NULL;
    status_history_stop(e);
}
